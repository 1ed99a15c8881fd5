"""The built-in trainers, a plugin like any other: ``adversarial`` (fine-tuning against an inner attack),
``contrastive`` (image-text fine-tuning with the CLIP loss) and ``distillation`` (a student taught by a
frozen teacher on unlabelled images); and ``poison``, the contrastive recipe that plants a backdoor."""

from vlmshield.api import hookimpl

from .adversarial import AdversarialTrainer
from .contrastive import ContrastiveTrainer, Poisoning
from .distillation import DistillationTrainer


@hookimpl
def register_trainers(register):
    register(AdversarialTrainer, ContrastiveTrainer, DistillationTrainer)


@hookimpl
def register_defenses(register):
    register(Poisoning)
