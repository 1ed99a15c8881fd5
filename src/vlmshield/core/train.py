"""The adversarial fine-tuning engine: one loop for every training-time defense.

Each step: read the next batch, craft adversarial images with the inner attack (any registered attack,
on the module and target the method names, with the method's loss), then step the optimizer on the
method's outer loss. A method (``AdversarialFineTuning``, a ``TrainingDefense``) says only what is its
own: the frozen references it needs (the original model, a proxy, class text embeddings), what the
attack sees, the outer loss, and which parameters train (the vision tower by default).

The engine owns everything else:

- **stages**, each with its own steps, learning rate, warm-up and weight decay (linear warm-up, then
  cosine decay to zero within the stage, as open_clip's ``cosine_lr``); one optimizer (AdamW, or SGD
  with momentum 0.9) runs through them;
- **determinism**: batches come from a seeded permutation per epoch and every step's attack from its
  own seed, so a run is a function of its configuration; ``out=DIR`` keeps ``checkpoint.pt`` (written
  atomically every ``checkpoint_every`` steps) and a run started again resumes from it and ends with the
  weights an uninterrupted run ends with (same device);
- **periodic logs** (``DIR/log.jsonl`` and a progress bar) and **robust validation** on a held-out slice;
- **torch.distributed**: under torchrun each process takes its slice of every global batch and the
  gradients are averaged across processes (one all-reduce per step), so N processes train the model one
  process trains with the whole batch;
- **mixed precision** (bfloat16 autocast) on GPUs.
"""

from __future__ import annotations

import abc
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import LabelledImages
from .defense import TrainingDefense
from .distributed import default_device, is_main_process, rank_and_world
from .errors import ParameterError
from .model import VLM
from .params import parse_eps, signature_defaults
from .plugins import get_host
from .record import derive_seed
from .weights import WeightsError, resume_state


@dataclass(frozen=True)
class Stage:
    """One phase of training with its own schedule (HPT-GPD has two; FARE and TeCoA one)."""

    name: str = "train"
    steps: int = 20000
    lr: float = 1e-5
    #: Linear warm-up steps at the start of the stage.
    warmup: int = 1400
    weight_decay: float = 1e-4

    def check(self) -> Stage:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ParameterError(f"stage {self.name!r}: steps must be a whole number, 1 or more; got {self.steps!r}.")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup <= self.steps):
            raise ParameterError(f"stage {self.name!r}: lr must be positive, weight decay >= 0 and warm-up within "
                                 f"the stage's steps; got lr={self.lr}, weight_decay={self.weight_decay}, "
                                 f"warmup={self.warmup}.")
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
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        _, world = rank_and_world()
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


OPTIMIZERS = {
    "adamw": lambda parameters, stage: torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay),
    "sgd": lambda parameters, stage: torch.optim.SGD(parameters, lr=stage.lr, momentum=0.9,
                                                     weight_decay=stage.weight_decay),
}

#: RobustVLM's training attack, shared by its FARE and TeCoA runs: Linf PGD-10, step 1/255, sign momentum
#: 0.9, random start (``TrainConfig`` fields, for presets).
ROBUSTVLM_ATTACK = {"attack": "pgd", "attack_steps": 10, "attack_alpha": 1 / 255,
                    "attack_params": {"momentum": 0.9, "random_start": True}}


def learning_rate(stage: Stage, step: int) -> float:
    """Linear warm-up over the stage's first ``warmup`` steps, then cosine decay to zero."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    decay_steps = max(1, stage.steps - stage.warmup)
    return 0.5 * stage.lr * (1 + math.cos(math.pi * (step - stage.warmup) / decay_steps))


class AdversarialFineTuning(TrainingDefense):
    """A training-time defense run by the engine: subclasses say what is their own.

    ``references`` builds the frozen things the losses need, once; ``attack_target`` says which module
    the inner attack sees, with which target and loss; ``loss`` is the outer loss on the adversarial
    batch. All three receive the run's ``TrainConfig`` through ``refs["config"]`` and the current ``Stage``
    through ``refs["stage"]`` when they need them, and,
    for methods that set ``stage_snapshot``, a frozen copy of the model as it was when the current stage
    began through ``refs["stage_start"]`` (HPT-GPD's pivot; checkpoints keep it, so a resumed run has it).
    """

    defense_kind: ClassVar[str] = "finetune"
    #: Presets: name -> dict of TrainConfig fields (and "stages"), e.g. the paper's and the world's.
    presets: ClassVar[dict[str, dict]] = {}
    #: Keep a frozen copy of the model at the start of each stage in ``refs["stage_start"]``.
    stage_snapshot: ClassVar[bool] = False

    @abc.abstractmethod
    def references(self, vlm: VLM, data: LabelledImages) -> dict:
        """Frozen models and tensors the losses need (built once, before the first step)."""

    @abc.abstractmethod
    def attack_target(self, vlm: VLM, x: torch.Tensor, y: torch.Tensor, refs: dict):
        """``(module, target, loss)`` for the inner attack: it maximises ``loss(module(x_adv), target)``."""

    @abc.abstractmethod
    def loss(self, vlm: VLM, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target, refs: dict) -> torch.Tensor:
        """The outer loss (a scalar, the mean over the batch) that the optimizer minimises; ``target`` is
        what ``attack_target`` gave the attack."""

    def trainable(self, vlm: VLM) -> list[nn.Parameter]:
        """The parameters that train: the vision tower (with its projection), as in TeCoA and FARE."""
        return list(vlm.model.visual.parameters())

    def fit(self, model: VLM, data, config: TrainConfig | None = None, **options) -> VLM:
        return train(model, data, self, config or TrainConfig(), **options)


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p_logits) || softmax(q_logits)) per sample, summed over classes (float32; gradients
    flow through both sides, so a teacher is passed detached)."""
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no parameter requiring gradients: a reference that never trains."""
    copied = copy.deepcopy(module).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


class ImageEncoder(nn.Module):
    """[0, 1] images -> the image embeddings (not normalized) of a frozen copy of ``vlm``'s vision tower.

    The frozen original encoder of FARE, without copying the text tower (half of a CLIP's weights).
    """

    def __init__(self, vlm: VLM):
        super().__init__()
        self.visual = frozen_copy(vlm.model.visual)
        self.register_buffer("pixel_mean", vlm.pixel_mean.clone())
        self.register_buffer("pixel_std", vlm.pixel_std.clone())
        self._resize = vlm._resize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual((self._resize(images) - self.pixel_mean) / self.pixel_std)


# ------------------------------------------------------------------------------ the loop
class _Batches:
    """The global batch of every step: a seeded permutation per epoch, read in order (drop_last)."""

    def __init__(self, data, batch_size: int, seed: int):
        if len(data) < batch_size:
            raise ParameterError(f"{getattr(data, 'name', 'the dataset')} has {len(data)} items, fewer than one "
                                 f"batch of {batch_size}.")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = len(data) // batch_size
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.data), generator=generator)
        return self._order[index * self.batch_size:(index + 1) * self.batch_size].tolist()

    def local(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's slice of the global batch of ``step``."""
        rank, world = rank_and_world()
        chosen = self.indices(step)
        share = len(chosen) // world
        items = [self.data[i] for i in chosen[rank * share:(rank + 1) * share]]
        return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def _average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average the gradients across processes: one all-reduce of all of them, flattened."""
    _, world = rank_and_world()
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = flat[offset:offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()


def _checkpoint_state(step, vlm, optimizer, config, method, history, refs, elapsed_s) -> dict:
    state = {"step": step, "model": vlm.model.state_dict(), "optimizer": optimizer.state_dict(),
             "config": config.to_dict(), "method": method.config(), "history": history, "elapsed_s": elapsed_s}
    if refs.get("stage_start") is not None:
        state["stage_start"] = refs["stage_start"].model.state_dict()
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _load_checkpoint(path: Path, config: TrainConfig, method) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign: say so, keep it for inspection
        raise WeightsError(f"checkpoint {path} is unreadable ({type(error).__name__}); delete it to start over.") \
            from error
    if state.get("config") != config.to_dict() or state.get("method") != method.config():
        raise ParameterError(f"checkpoint {path} belongs to another configuration; use another output folder, "
                             f"or delete it to start over.")
    return state


def _validate(vlm: VLM, val_data, config: TrainConfig, device) -> dict:
    from .evaluate import evaluate

    record = evaluate(vlm, val_data, attack="apgd-ce", eps=config.eps, steps=config.val_steps, n=config.val_n,
                      batch_size=min(config.val_n, 100), device=device, progress=False, seed=config.seed)
    return {"clean_acc": record["average"]["clean_acc"], "robust_acc": record["average"]["robust_acc"]}


def train(vlm: VLM, data, method: AdversarialFineTuning, config: TrainConfig, *, out=None, val_data=None,
          device=None, progress: bool | None = None, log: Callable[[str], None] | None = None,
          stop_after: int | None = None) -> VLM:
    """Fine-tune ``vlm`` in place on ``data`` (LabelledImages) with ``method``; returns it in eval mode.

    ``out`` keeps the checkpoint and the log and makes the run resumable; ``val_data`` is the held-out
    slice for robust validation; ``stop_after`` ends after that many steps (a checkpoint is written), as
    an interruption would.
    """
    config = config.check()
    device = torch.device(device) if device else default_device()
    vlm.to(device)
    refs = method.references(vlm, data)
    refs["config"] = config
    parameters = method.trainable(vlm)
    trainable_ids = {id(p) for p in parameters}
    required = [p.requires_grad for p in vlm.parameters()]
    for parameter in vlm.parameters():
        parameter.requires_grad_(id(parameter) in trainable_ids)
    optimizer = OPTIMIZERS[config.optimizer](parameters, config.stages[0])
    attack = inner_attack(config)
    batches = _Batches(data, config.batch_size, config.seed)
    start, history, elapsed_before = 0, [], 0.0
    checkpoint = Path(out) / "checkpoint.pt" if out is not None else None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if checkpoint.exists():
            state = _load_checkpoint(checkpoint, config, method)
            resume_state(vlm.model, optimizer, state, checkpoint)
            start, history = state["step"], list(state["history"])
            elapsed_before = state.get("elapsed_s", 0.0)
            if "stage_start" in state:
                refs["stage_start"] = frozen_copy(vlm)
                refs["stage_start"].model.load_state_dict(state["stage_start"])
    end = config.total_steps if stop_after is None else min(config.total_steps, start + stop_after)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    main = is_main_process()
    bar = tqdm(range(start, end), initial=start, total=config.total_steps, desc=f"train {method.name}", unit="step",
               disable=(None if progress is None else not progress) or not main)
    clock = time.perf_counter()
    for step in bar:
        stage, stage_step = config.stage_at(step)
        refs["stage"] = stage
        if method.stage_snapshot and (stage_step == 0 or refs.get("stage_start") is None):
            refs["stage_start"] = frozen_copy(vlm)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = learning_rate(stage, stage_step), stage.weight_decay
        x, y = (t.to(device) for t in batches.local(step))
        with autocast:
            module, target, attack_loss = method.attack_target(vlm, x, y, refs)
            attack_for_step = attack if attack_loss is None else replace_loss(attack, attack_loss)
            x_adv = attack_for_step(module, x, target, seed=derive_seed(config.seed, "attack", step,
                                                                        rank_and_world()[0]))
            vlm.train()
            loss = method.loss(vlm, x_adv, x, y, target, refs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(parameters)
        optimizer.step()
        vlm.eval()
        entry = {"step": step + 1, "stage": stage.name, "lr": optimizer.param_groups[0]["lr"], "loss": _mean_loss(loss)}
        history.append(entry["loss"])
        bar.set_postfix(loss=f"{entry['loss']:.4f}")
        done = step + 1
        if val_data is not None and config.val_every and done % config.val_every == 0:
            entry["val"] = _validate(vlm, val_data, config, device)
        if main and out is not None:
            with open(Path(out) / "log.jsonl", "a") as file:
                file.write(json.dumps(entry) + "\n")
        if log is not None and main and (done % config.log_every == 0 or done == end):
            log(f"step {done}/{config.total_steps} [{stage.name}] loss {entry['loss']:.4f} "
                f"lr {entry['lr']:.2e} ({time.perf_counter() - clock:.0f} s)"
                + (f" val clean {entry['val']['clean_acc']:.3f} robust {entry['val']['robust_acc']:.3f}"
                   if "val" in entry else ""))
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == end):
            if main:
                elapsed_s = elapsed_before + time.perf_counter() - clock
                _save_checkpoint(checkpoint, _checkpoint_state(done, vlm, optimizer, config, method, history, refs,
                                                               elapsed_s))
            if rank_and_world()[1] > 1:
                dist.barrier()
    bar.close()
    for parameter, wanted in zip(vlm.parameters(), required, strict=True):
        parameter.requires_grad_(wanted)
    return vlm.eval()


def training_seconds(out) -> float | None:
    """Seconds of training in ``out``'s checkpoint, summed over every resumed part of the run."""
    path = Path(out) / "checkpoint.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("elapsed_s")


def inner_attack(config: TrainConfig):
    """The configured inner attack (``attack_alpha`` goes to attacks that take a step size)."""
    cls = get_host().get("attack", config.attack).obj
    params = {"eps": config.eps, "steps": config.attack_steps}
    if "alpha" in signature_defaults(cls):
        params["alpha"] = config.attack_alpha
    return cls(**{**params, **config.attack_params})


def replace_loss(attack, loss):
    """The same attack with another loss (the method's inner loss)."""
    return type(attack)(**{**attack.params, "loss": loss})


def _mean_loss(loss: torch.Tensor) -> float:
    value = loss.detach().float()
    _, world = rank_and_world()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value.item()
