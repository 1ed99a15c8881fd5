"""The built-in trainers, a plugin like any other: ``adversarial`` (fine-tuning against an inner attack),
``contrastive`` (image-text fine-tuning with the CLIP loss) and ``distillation`` (a student taught by a
frozen teacher on unlabelled images)."""

from vlmshield.api import hookimpl

from .adversarial import AdversarialTrainer


@hookimpl
def register_trainers(register):
    register(AdversarialTrainer)
