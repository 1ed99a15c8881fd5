"""What a trainer is, and the schedule every trainer shares.

A training-time defense (``TrainingDefense``) names the trainer that runs it (``trainer``: a registered
trainer, as ``adversarial``, ``contrastive`` or ``distillation``); a plugin brings a new kind of
training by registering a ``Trainer`` through the ``register_trainers`` hook, with no edit of vlmshield.
A trainer declares the data it reads (``takes``: a key of ``DATA_TYPES``) and the base class of the
methods it runs (``method_type``); ``vlmshield train METHOD`` picks the trainer from the method.

Every trainer runs the same schedule (``TrainConfig``): stages, each with its own steps, learning
rate, warm-up and weight decay (linear warm-up, then cosine decay to zero within the stage), one
optimizer through them, a global batch split across processes, a seed, checkpoint and log intervals.
The fields ``eps`` and ``attack*`` configure the inner attack of adversarial training; other trainers
ignore them.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .defense import TrainingDefense
from .errors import ParameterError
from .params import Configurable, parse_eps

#: The optimizers a ``TrainConfig`` may name: AdamW, or SGD with momentum 0.9.
OPTIMIZER_NAMES = ("adamw", "sgd")
#: The learning-rate schedules a ``Stage`` may name.
SCHEDULES = ("cosine", "inverse")


@dataclass(frozen=True)
class Stage:
    """One phase of training with its own schedule (HPT-GPD has two; FARE and TeCoA one)."""

    name: str = "train"
    steps: int = 20000
    lr: float = 1e-5
    #: Linear warm-up steps at the start of the stage.
    warmup: int = 1400
    weight_decay: float = 1e-4
    #: Where the cosine decay ends (0: to zero).
    lr_end: float = 0.0
    #: When set, the learning rate goes linearly from ``lr_start`` to ``lr`` over the stage instead (no warm-up,
    #: no decay): PAR's first half, from 3e-5 down to 3e-6.
    lr_start: float | None = None
    #: ``cosine`` (warm-up, then cosine decay to ``lr_end``) or ``inverse``: lr (1 + decay_rate t)^-decay_power
    #: at the stage's step t, no warm-up (the annealing of DANN and of domain adaptation codes since).
    schedule: str = "cosine"
    decay_rate: float = 0.001
    decay_power: float = 0.75

    def check(self) -> Stage:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ParameterError(f"stage {self.name!r}: steps must be a whole number, 1 or more; got {self.steps!r}.")
        if not (0 < self.lr < math.inf and 0 <= self.weight_decay < math.inf and 0 <= self.warmup <= self.steps):
            raise ParameterError(f"stage {self.name!r}: lr must be positive and finite, weight decay finite and >= 0, "
                                 f"and warm-up within "
                                 f"the stage's steps; got lr={self.lr}, weight_decay={self.weight_decay}, "
                                 f"warmup={self.warmup}.")
        if not (0 <= self.lr_end <= self.lr and (self.lr_start is None or 0 < self.lr_start < math.inf)):
            raise ParameterError(f"stage {self.name!r}: lr_end must be in [0, lr] and lr_start, when given, positive "
                                 f"and finite; got lr_end={self.lr_end}, lr_start={self.lr_start}.")
        if self.schedule not in SCHEDULES:
            raise ParameterError(f"stage {self.name!r}: the schedule must be one of {', '.join(SCHEDULES)}; "
                                 f"got {self.schedule!r}.")
        if not (0 <= self.decay_rate < math.inf and 0 <= self.decay_power < math.inf):
            raise ParameterError(f"stage {self.name!r}: decay_rate and decay_power must be finite and >= 0; got "
                                 f"{self.decay_rate} and {self.decay_power}.")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on besides the model, the data and the method."""

    stages: tuple[Stage, ...] = (Stage(),)
    #: The global batch (split across processes under torchrun).
    batch_size: int = 128
    eps: float = 4 / 255
    #: The inner attack: a registered attack name, its iterations and step size.
    attack: str = "pgd"
    attack_steps: int = 10
    attack_alpha: float = 1 / 255
    attack_params: dict = field(default_factory=dict)
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50
    #: Robust validation every this many steps (0: only at the end), on ``val_n`` held-out images,
    #: APGD-CE with ``val_steps`` iterations at the training eps.
    val_every: int = 0
    val_n: int = 128
    val_steps: int = 10
    #: bfloat16 autocast on GPUs (ignored on the CPU).
    amp: bool = True
    #: ``adamw`` (RobustVLM's FARE and TeCoA) or ``sgd`` (momentum 0.9: TeCoA's and PMG-AFT's code, HPT-GPD's).
    optimizer: str = "adamw"
    #: AdamW's betas (torch's default; CLIP fine-tuning codes often use (0.9, 0.98)).
    betas: tuple[float, float] = (0.9, 0.999)
    #: Nesterov momentum for SGD (domain adaptation codes use it).
    nesterov: bool = False

    def check(self) -> TrainConfig:
        if not self.stages:
            raise ParameterError("training needs at least one stage.")
        for stage in self.stages:
            stage.check()
        for name in ("batch_size", "attack_steps", "checkpoint_every", "log_every", "val_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a whole number, 1 or more; got {value!r}.")
        parse_eps(self.eps)
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ParameterError(f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)}; got {self.optimizer!r}.")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ParameterError(f"betas must be two numbers in [0, 1); got {self.betas!r}.")
        if self.nesterov and self.optimizer != "sgd":
            raise ParameterError(f"nesterov is SGD's momentum; the optimizer is {self.optimizer}.")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if self.batch_size % world:
            raise ParameterError(f"the batch of {self.batch_size} does not split evenly across {world} processes.")
        return self

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def stage_at(self, step: int) -> tuple[Stage, int]:
        """The stage of global step ``step`` and the step's index within it."""
        for stage in self.stages:
            if step < stage.steps:
                return stage, step
            step -= stage.steps
        raise ParameterError(f"step {step} is past the end of training.")

    def to_dict(self) -> dict:
        return {**asdict(self), "stages": [asdict(s) for s in self.stages]}


def learning_rate(stage: Stage, step: int) -> float:
    """Linear warm-up over the stage's first ``warmup`` steps, then cosine decay to ``lr_end``; for an
    ``inverse`` stage, lr (1 + decay_rate step)^-decay_power; or, for a stage
    with ``lr_start``, a straight line from ``lr_start`` (at its first step) towards ``lr`` (where the next stage
    begins)."""
    if stage.lr_start is not None:
        return stage.lr_start + (stage.lr - stage.lr_start) * step / stage.steps
    if stage.schedule == "inverse":
        return stage.lr * (1 + stage.decay_rate * step) ** -stage.decay_power
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    decay_steps = max(1, stage.steps - stage.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * (step - stage.warmup) / decay_steps))
    return stage.lr_end + (stage.lr - stage.lr_end) * cosine


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p_logits) || softmax(q_logits)) per sample, summed over classes (float32; gradients
    flow through both sides, so a teacher is passed detached)."""
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


class Trainer(Configurable, abc.ABC):
    """Runs the training-time defenses of one kind: their data, their step, their loss.

    ``train`` fine-tunes ``model`` in place with ``method`` (an instance of ``method_type``) on ``data``
    and returns it in eval mode; ``out`` is the run's folder (checkpoint, log; a run started again
    resumes from it and ends with the weights of an uninterrupted run), ``val_data`` an optional
    held-out set, ``stop_after`` ends after that many steps as an interruption would. Parameters of
    the trainer itself (a backdoor trigger for the contrastive trainer, say) are its ``Configurable``
    parameters.
    """

    kind: ClassVar[str] = "trainer"
    #: Parameters in pixel units, read with the eps rule on the command line.
    pixel_params: ClassVar[frozenset[str]] = frozenset()
    #: The data it trains on: a key of ``DATA_TYPES`` (``labelled``, ``captioned``, ``unlabelled``,
    #: ``domain-pair``).
    takes: ClassVar[str] = "labelled"
    #: The base class of the methods it runs.
    method_type: ClassVar[type] = TrainingDefense

    @abc.abstractmethod
    def train(self, model: nn.Module, data, method, config: TrainConfig, *, out=None, val_data=None,
              device=None, progress: bool | None = None, log=None, stop_after: int | None = None) -> nn.Module:
        """Train ``model`` with ``method`` on ``data``; see the class docstring."""
