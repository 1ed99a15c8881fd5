"""What a defense is.

A defense's ``kind`` says what it consumes and what it produces:

- ``finetune``: a VLM (and training data) in, a more robust VLM out (TeCoA, FARE, HPT-GPD);
- ``backdoor-removal``: a poisoned VLM and image-text pairs in, a cleaned VLM out (PAR);
- ``poisoning``: a VLM and image-text pairs in, a backdoored VLM out (the models backdoor removal is measured
  on; not a defense, but trained and recorded as one);
- ``domain-adaptation``: a labelled source and an unlabelled target domain in, a classifier out (DART);
- ``test-time``: a classifier in, a wrapped classifier out that defends each input at inference (TTC).

The first four are ``TrainingDefense`` subclasses: each names the registered trainer that runs it
(``trainer``: ``adversarial`` for fine-tuning against an inner attack, ``contrastive`` for image-text
fine-tuning, ``distillation`` for a student taught by a frozen teacher, or a plugin's own) and
subclasses that trainer's method base; ``fit`` runs it. Test-time defenses are ``TestTimeDefense``
subclasses and implement ``wrap``. A test-time defense that changes the input and
then classifies it (TTC, random noise) wraps into a ``Purifier``: ``purify(x)`` is the defended input,
which is what adaptive attacks such as ``bpda-eot`` differentiate around (BPDA). Each test-time defense
names the adaptive attacks that must be reported beside a non-adaptive number (``adaptive_attacks``);
one whose settings depend on the task (TTC's ``tau_thres="auto"``) asks for clean calibration images
(``calibration_size``) and receives them in ``wrap(classifier, calibration=images)``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from .errors import PluginError
from .params import Configurable

TRAINING_KINDS = ("finetune", "backdoor-removal", "poisoning", "domain-adaptation")
DEFENSE_KINDS = (*TRAINING_KINDS, "test-time")


class Defense(Configurable, abc.ABC):
    """Base of all defenses; subclass TrainingDefense or TestTimeDefense."""

    kind: ClassVar[str] = "defense"
    #: Parameters in pixel units (budgets, step sizes), read with the eps rule on the command line.
    pixel_params: ClassVar[frozenset[str]] = frozenset()
    #: One of DEFENSE_KINDS.
    defense_kind: ClassVar[str] = ""
    #: The paper the defaults come from (a citation or URL).
    paper: ClassVar[str] = ""

    @classmethod
    def check_class(cls) -> None:
        super().check_class()
        if cls.defense_kind not in DEFENSE_KINDS:
            raise PluginError(
                f"defense {cls.name!r} has defense_kind {cls.defense_kind!r}; "
                f"expected one of {', '.join(DEFENSE_KINDS)}"
            )
        base = TestTimeDefense if cls.defense_kind == "test-time" else TrainingDefense
        if not issubclass(cls, base):
            raise PluginError(f"defense {cls.name!r} of kind {cls.defense_kind!r} must subclass {base.__name__}")


class TrainingDefense(Defense):
    """A defense that trains: fine-tuning, backdoor removal or domain adaptation.

    Subclasses are written against a trainer's method base (``AdversarialFineTuning``,
    ``ContrastiveFineTuning``, ``Distillation``), which sets ``trainer``."""

    defense_kind: ClassVar[str] = "finetune"
    #: The registered trainer that runs this defense.
    trainer: ClassVar[str] = ""
    #: Presets: name -> {"model", "dataset", "config" (TrainConfig fields and "stages"), "params", ...},
    #: e.g. the paper's run and the world's.
    presets: ClassVar[dict[str, dict]] = {}
    #: Whether it trains against an attack at ``TrainConfig.eps`` (the card of its result states that threat model).
    adversarial: ClassVar[bool] = False
    #: Keep a frozen copy of the model at the start of each stage in ``refs["stage_start"]`` (checkpoints
    #: keep it, so a resumed run has it).
    stage_snapshot: ClassVar[bool] = False

    @classmethod
    def check_class(cls) -> None:
        super().check_class()
        if not cls.trainer:
            raise PluginError(f"defense {cls.name!r} names no trainer; subclass a trainer's method base "
                              f"(AdversarialFineTuning, ContrastiveFineTuning, Distillation) or set trainer")

    def lr_scales(self, model: nn.Module) -> dict[int, float]:
        """Learning-rate multipliers of the parameters that do not train at the stage's rate, by ``id`` (a
        pretrained backbone at 0.1x, say); none by default."""
        return {}

    def fit(self, model: nn.Module, data, config=None, *, trainer_params: dict | None = None, **options) -> nn.Module:
        """Train ``model`` on ``data`` with this defense's trainer (``config``: a ``TrainConfig``, the
        default one when None; ``options``: the trainer's ``train`` options, such as ``out=``)."""
        from .plugins import get_host
        from .trainer import TrainConfig

        trainer = get_host().create("trainer", self.trainer, **(trainer_params or {}))
        return trainer.train(model, data, self, config or TrainConfig(), **options)


class TestTimeDefense(Defense):
    """A defense applied at inference, around an existing classifier."""

    __test__ = False  # not a pytest test class, whatever its name says
    defense_kind: ClassVar[str] = "test-time"
    #: Whether the wrapped classifier draws random numbers (its numbers need EOT-style attacks).
    randomized: ClassVar[bool] = False
    #: The adaptive attacks whose robust accuracy is reported beside a non-adaptive attack's.
    adaptive_attacks: ClassVar[tuple[str, ...]] = ("bpda-eot",)

    def calibration_size(self) -> int:
        """How many clean images of the task ``wrap`` needs (``calibration=``); 0 for none."""
        return 0

    @abc.abstractmethod
    def wrap(self, classifier: nn.Module, calibration: torch.Tensor | None = None) -> nn.Module:
        """Return a module with the classifier's interface ([0, 1] images -> logits), defended.
        ``calibration`` holds clean images of the task when ``calibration_size()`` asks for them."""


class Purifier(nn.Module, abc.ABC):
    """A defended classifier that changes its input, then classifies: ``classifier(purify(x))``."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    @abc.abstractmethod
    def purify(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The defended input, in [0, 1]; random draws come from ``generator`` when one is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purify(x))

    def straight_through(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The defended output, with the gradient w.r.t. ``x`` passed through ``purify`` as the identity
        (BPDA, Athalye et al. 2018): the classifier's gradient at the purified input."""
        purified = self.purify(x.detach(), generator)
        return self.classifier(x + (purified - x).detach())
