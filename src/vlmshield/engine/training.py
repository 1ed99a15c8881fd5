"""The training loop every trainer runs: schedule, determinism, checkpoints, processes, precision.

A trainer (``vlmshield.trainers``, or a plugin's) says how to turn this process's items of a step's
global batch into a loss (``step_loss(step, items, refs)``); ``run_training`` owns everything else:

- **stages**, each with its own steps, learning rate, warm-up and weight decay (``learning_rate``:
  linear warm-up, then cosine decay to zero within the stage, as open_clip's ``cosine_lr``); one
  optimizer (AdamW, or SGD with momentum 0.9) runs through them;
- **determinism**: batches come from a seeded permutation per epoch (``Batches``) and a step's random
  draws from seeds derived from the run's seed, so a run is a function of its configuration;
  ``out=DIR`` keeps ``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps) and a run
  started again resumes from it and ends with the weights an uninterrupted run ends with (same device);
- **logs** (``DIR/log.jsonl``, a progress bar, a line every ``log_every`` steps) and optional validation;
- **torch.distributed**: under torchrun each process takes its slice of every global batch and the
  gradients are averaged across processes (one all-reduce per step), so N processes train the model one
  process trains with the whole batch;
- **mixed precision** (bfloat16 autocast) on GPUs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..core import (
    VLM,
    ParameterError,
    TrainConfig,
    WeightsError,
    derive_seed,
    describe_identity,
    frozen_copy,
    learning_rate,
    model_identity,
    same_model,
    weights_sha256,
)
from ..core.weights import resume_state
from .distributed import is_main_process, rank_and_world, resolve_device
from .records import locked_folder, remove_leftovers

OPTIMIZERS = {
    "adamw": lambda groups, stage, config: torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay,
                                                             betas=tuple(config.betas)),
    "sgd": lambda groups, stage, config: torch.optim.SGD(groups, lr=stage.lr, momentum=0.9,
                                                         weight_decay=stage.weight_decay, nesterov=config.nesterov),
}


def parameter_groups(parameters: list[nn.Parameter], no_decay, lr_scales: dict[int, float] | None = None
                     ) -> list[dict]:
    """The optimizer's groups: the parameters with the stage's weight decay, then (when there are any) those
    in ``no_decay`` without it (marked ``"no_decay"``); each split further by learning-rate multiplier
    (``lr_scales``, by parameter id; the groups record theirs as ``"lr_scale"``)."""
    excluded, lr_scales = {id(p) for p in no_decay}, lr_scales or {}
    groups = []
    for decayed in (True, False):
        chosen = [p for p in parameters if (id(p) in excluded) != decayed]
        for scale in dict.fromkeys(lr_scales.get(id(p), 1.0) for p in chosen):
            group = {"params": [p for p in chosen if lr_scales.get(id(p), 1.0) == scale]}
            group.update({} if decayed else {"weight_decay": 0.0, "no_decay": True})
            groups.append({**group, "lr_scale": scale} if scale != 1.0 else group)
    return groups or [{"params": []}]


class Batches:
    """The global batch of every step: a seeded permutation per epoch, read in order (drop_last)."""

    def __init__(self, data, batch_size: int, seed: int):
        if len(data) < batch_size:
            raise ParameterError(f"{getattr(data, 'name', 'the dataset')} has {len(data)} items, fewer than one "
                                 f"batch of {batch_size}.")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = len(data) // batch_size
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> list[int]:
        """The dataset indices of the global batch of ``step``."""
        epoch, index = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.data), generator=generator)
        return self._order[index * self.batch_size:(index + 1) * self.batch_size].tolist()

    def local(self, step: int) -> list:
        """This process's slice of the items of the global batch of ``step``."""
        rank, world = rank_and_world()
        chosen = self.indices(step)
        share = len(chosen) // world
        return [self.data[i] for i in chosen[rank * share:(rank + 1) * share]]


def weights_module(model: nn.Module) -> nn.Module:
    """The module whose state a checkpoint keeps: a VLM's open_clip model, any other model itself."""
    return model.model if isinstance(model, VLM) else model


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average the gradients across processes: one all-reduce of all of them, flattened. A parameter the
    loss does not reach keeps no gradient (as in one process, where the optimizer then skips it); every
    process runs the same model and loss, so the same parameters have gradients in each."""
    _, world = rank_and_world()
    if world == 1:
        return
    reached = [p for p in parameters if p.grad is not None]
    if not reached:
        return
    flat = torch.cat([p.grad.flatten() for p in reached])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for parameter in reached:
        parameter.grad = flat[offset:offset + parameter.numel()].view_as(parameter).clone()
        offset += parameter.numel()


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a training checkpoint so that readers see the old one or the new one, never half."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint's state (tensors and plain data only: no unpickling of code); WeightsError,
    keeping the file for inspection, when it is truncated or foreign."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"checkpoint {path} is unreadable ({type(error).__name__}); delete it to start over.") \
            from error


def _load_checkpoint(path: Path, config: TrainConfig, method, trainer, model: nn.Module,
                     start_model: dict) -> dict:
    state = read_checkpoint(path)
    trained_by = state.get("trainer")  # checkpoints written before trainers had parameters hold none
    if (state.get("config") != config.to_dict() or state.get("method") != method.config()
            or (trainer is not None and trained_by is not None and trained_by != trainer.config())):
        raise ParameterError(f"checkpoint {path} belongs to another configuration; use another output folder, "
                             f"or delete it to start over.")
    started_from = state.get("start_model")  # older checkpoints do not say
    if (started_from is not None and not same_model(started_from, start_model)
            and weights_sha256(weights_module(model)) != weights_sha256(state["model"])):  # not the run's own model
        raise ParameterError(f"checkpoint {path} continues a training of {describe_identity(started_from)}, not of "
                             f"{describe_identity(start_model)}; use another output folder, or delete it to start "
                             f"over.")
    return state


def training_progress(out) -> dict | None:
    """What ``out``'s checkpoint says of the run: ``step``, ``elapsed_s`` (seconds of training, summed over every
    part of a resumed run) and ``resumes`` (how many times it was resumed); None without a checkpoint."""
    path = Path(out) / "checkpoint.pt"
    if not path.exists():
        return None
    state = read_checkpoint(path)
    return {"step": state.get("step"), "elapsed_s": state.get("elapsed_s"), "resumes": state.get("resumes", 0)}


def _keep_log_until(path: Path, step: int) -> None:
    """Drop the log lines of steps after ``step`` (logged after the checkpoint a run resumes from), so that a
    resumed run logs each step once."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut short by the kill
            break
    path.write_text("".join(f"{line}\n" for line in kept))


def mean_loss(loss: torch.Tensor) -> float:
    """The loss averaged over processes, as a float."""
    value = loss.detach().float()
    _, world = rank_and_world()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value.item()


def run_training(model: nn.Module, method, config: TrainConfig, *, batches: Batches,
                 step_loss: Callable[[int, list, dict], torch.Tensor], refs: dict, parameters: list[nn.Parameter],
                 out=None, device=None, progress: bool | None = None, log: Callable[[str], None] | None = None,
                 stop_after: int | None = None, validate: Callable[[], dict] | None = None,
                 trainer=None, no_decay: list[nn.Parameter] = ()) -> nn.Module:
    """Train ``parameters`` of ``model`` (already on ``device``) for ``config``'s stages; returns it in eval mode.

    Each step sets the stage's learning rate, calls ``step_loss(step, items, refs)`` on this process's
    items of the global batch (under bfloat16 autocast on GPUs), averages the gradients across processes
    and steps the optimizer (the stage's weight decay on every parameter but those in ``no_decay``). ``refs``
    is the trainer's state for the losses; the loop adds the ``config``,
    the current ``stage``, for a method with ``stage_snapshot`` ``stage_start``, and an empty dict
    ``diagnostics`` into which a loss may put named numbers of this step (as floats, or 0-d tensors): they go
    into the log beside the loss. ``validate()``
    runs every ``val_every`` steps when given; its dict goes into the log. ``trainer`` (the trainer
    running the loop) is recorded in the checkpoint with its parameters, and a checkpoint written by the
    same trainer with other parameters (another backdoor trigger, say) is not resumed, nor one that started from
    another model (its weights and config sha256). While it runs, ``out`` is locked: a second training into
    the same folder is refused. A resumed run drops the log lines of steps after its checkpoint (each step is
    logged once) and counts its earlier parts' time and its resumes in the checkpoint.
    """
    with locked_folder(out) if out is not None and is_main_process() else nullcontext():
        return _train_in(model, method, config, batches=batches, step_loss=step_loss, refs=refs,
                         parameters=parameters, out=out, device=device, progress=progress, log=log,
                         stop_after=stop_after, validate=validate, trainer=trainer, no_decay=no_decay)


def _train_in(model, method, config, *, batches, step_loss, refs, parameters, out, device, progress, log,
              stop_after, validate, trainer, no_decay) -> nn.Module:
    device = resolve_device(device)
    refs["config"] = config
    trainable_ids = {id(p) for p in parameters}
    required = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable_ids)
    optimizer = OPTIMIZERS[config.optimizer](parameter_groups(parameters, no_decay, method.lr_scales(model)),
                                             config.stages[0], config)
    start, history, elapsed_before, resumes = 0, [], 0.0, 0
    start_model = None
    checkpoint = Path(out) / "checkpoint.pt" if out is not None else None
    if checkpoint is not None:
        start_model = {k: v for k, v in model_identity(model).items() if k != "provider"}
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(checkpoint)
        if checkpoint.exists():
            state = _load_checkpoint(checkpoint, config, method, trainer, model, start_model)
            resume_state(weights_module(model), optimizer, state, checkpoint)
            start, history = state["step"], list(state["history"])
            elapsed_before, resumes = state.get("elapsed_s", 0.0), state.get("resumes", 0) + 1
            if "stage_start" in state:
                refs["stage_start"] = frozen_copy(model)
                weights_module(refs["stage_start"]).load_state_dict(state["stage_start"])
        if is_main_process():
            _keep_log_until(Path(out) / "log.jsonl", start)
    end = config.total_steps if stop_after is None else min(config.total_steps, start + stop_after)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    main = is_main_process()
    bar = tqdm(range(start, end), initial=start, total=config.total_steps, desc=f"train {method.name}",
               unit="step", disable=(None if progress is None else not progress) or not main)
    clock = time.perf_counter()
    for step in bar:
        stage, stage_step = config.stage_at(step)
        refs["stage"] = stage
        if method.stage_snapshot and (stage_step == 0 or refs.get("stage_start") is None):
            refs["stage_start"] = frozen_copy(model)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage, stage_step) * group.get("lr_scale", 1.0)
            group["weight_decay"] = 0.0 if group.get("no_decay") else stage.weight_decay
        refs["diagnostics"] = {}
        with autocast:
            loss = step_loss(step, batches.local(step), refs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(parameters)
        optimizer.step()
        model.eval()
        entry = {"step": step + 1, "stage": stage.name, "lr": learning_rate(stage, stage_step), "loss": mean_loss(loss),
                 **{name: float(value) for name, value in refs["diagnostics"].items()}}
        history.append(entry["loss"])
        bar.set_postfix(loss=f"{entry['loss']:.4f}")
        done = step + 1
        if validate is not None and config.val_every and done % config.val_every == 0:
            entry["val"] = validate()
        if main and out is not None:
            with open(Path(out) / "log.jsonl", "a") as file:
                file.write(json.dumps(entry) + "\n")
        if log is not None and main and (done % config.log_every == 0 or done == end):
            log(f"step {done}/{config.total_steps} [{stage.name}] loss {entry['loss']:.4f} "
                + "".join(f"{name} {entry[name]:.4f} " for name in refs["diagnostics"])
                + f"lr {entry['lr']:.2e} ({time.perf_counter() - clock:.0f} s)"
                + ("".join(f" val {k} {v:.3f}" for k, v in entry["val"].items()) if "val" in entry else ""))
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == end):
            if main:
                state = {"step": done, "model": weights_module(model).state_dict(),
                         "optimizer": optimizer.state_dict(), "config": config.to_dict(), "method": method.config(),
                         "history": history, "elapsed_s": elapsed_before + time.perf_counter() - clock,
                         "start_model": start_model, "resumes": resumes}
                if trainer is not None:
                    state["trainer"] = trainer.config()
                if refs.get("stage_start") is not None:
                    state["stage_start"] = weights_module(refs["stage_start"]).state_dict()
                save_checkpoint(checkpoint, state)
            if rank_and_world()[1] > 1:
                dist.barrier()
    bar.close()
    for parameter, wanted in zip(model.parameters(), required, strict=True):
        parameter.requires_grad_(wanted)
    return model.eval()

