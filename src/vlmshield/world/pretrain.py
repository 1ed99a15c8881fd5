"""The pretraining recipe of the world's tiny CLIPs: contrastive learning on ``world-pretrain``.

``pretrain("tinyvit8", out_dir)`` trains a randomly initialised model with open_clip's ``ClipLoss``
(AdamW, the engine's schedule: linear warm-up then cosine decay, the logit scale learnt and capped at 100
as in CLIP). Batches are read in order from the seeded split, so a run is a pure function of its recipe
and seed: the same numbers on the same machine, and a run resumed from its checkpoint ends with the same
weights as one that was never interrupted. ``vlmshield world pretrain ARCH --out DIR`` runs it from the
command line; ``export`` writes the weights and card as every packaged model's are (``export_packaged``).

Two choices are the world's own, made from measurements on tinyvit8 (CLIP has neither): the text tower
learns at a fifth of the image tower's rate (at the same rate the text embeddings settled before the
image tower had found positions and shapes, and those were learnt late or not at all), and the word
embeddings start at std 1 rather than open_clip's 0.02, so that the 49 words are told apart from
the first step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import open_clip
import torch
from tqdm.auto import tqdm

from vlmshield.api import (
    VLM,
    ParameterError,
    Stage,
    environment,
    export_packaged,
    learning_rate,
    measure_for_card,
    packaged_cards,
    read_checkpoint,
    resolve_device,
    resume_state,
    save_checkpoint,
)

from . import data as world_data
from .models import architecture, build


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one pretraining run (the defaults produce the shipped weights)."""

    arch: str
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.05  # fraction of the steps
    text_lr_scale: float = 0.2  # the text tower's learning rate relative to the image tower's
    token_init_std: float = 1.0  # std of the initial word embeddings (open_clip's is 0.02)
    seed: int = 0

    def check(self) -> Recipe:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a whole number, 1 or more; got {value!r}.")
        if self.steps * self.batch_size > world_data.SIZES["world-pretrain"]["train"]:
            raise ParameterError(f"{self.steps} steps of {self.batch_size} would read past the end of "
                                 f"world-pretrain ({world_data.SIZES['world-pretrain']['train']} pairs).")
        finite = all(math.isfinite(v) for v in (self.lr, self.weight_decay, self.text_lr_scale, self.token_init_std))
        if not (finite and self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup < 1 and self.text_lr_scale > 0
                and self.token_init_std > 0):
            raise ParameterError(f"lr, text_lr_scale and token_init_std must be positive and finite, weight decay "
                                 f">= 0 and warmup in [0, 1); got lr={self.lr}, weight_decay={self.weight_decay}, "
                                 f"warmup={self.warmup}, text_lr_scale={self.text_lr_scale}, "
                                 f"token_init_std={self.token_init_std}.")
        return self

    def stage(self) -> Stage:
        """The schedule as the engine's ``Stage``: linear warm-up over ``warmup`` of the steps (one at least),
        then cosine decay to zero."""
        return Stage("pretrain", steps=self.steps, lr=self.lr, warmup=max(1, round(self.warmup * self.steps)),
                     weight_decay=self.weight_decay)


#: The convolutional tower learns the world's shapes in fewer steps, and likes a larger rate.
RECIPES = {"tinyvit8": Recipe("tinyvit8"), "tinyvit4": Recipe("tinyvit4"),
           "tinyrn": Recipe("tinyrn", steps=1000, lr=2e-3)}
MAX_LOGIT_SCALE = math.log(100.0)


def recipe_for(arch: str | Recipe, **overrides) -> Recipe:
    """The recipe of ``arch`` (the shipped weights' one) with ``overrides`` applied, checked."""
    recipe = arch if isinstance(arch, Recipe) else RECIPES.get(arch, Recipe(arch))
    return replace(recipe, **overrides).check()


def initial_model(recipe: Recipe) -> VLM:
    """The randomly initialised model a run of ``recipe`` starts from (seeded, word embeddings re-drawn).

    The seed applies to a copy of the global random state: the caller's random numbers are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        vlm = build(recipe.arch)
        torch.nn.init.normal_(vlm.model.token_embedding.weight, std=recipe.token_init_std)
    return vlm


def _optimizer(vlm: VLM, recipe: Recipe) -> torch.optim.Optimizer:
    image = [p for n, p in vlm.model.named_parameters() if n.startswith("visual.") or n == "logit_scale"]
    text = [p for n, p in vlm.model.named_parameters() if not (n.startswith("visual.") or n == "logit_scale")]
    return torch.optim.AdamW([{"params": image, "scale": 1.0}, {"params": text, "scale": recipe.text_lr_scale}],
                             lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98), eps=1e-6)


def _batch(pairs, step: int, batch_size: int) -> tuple[torch.Tensor, list[str]]:
    items = [pairs[i] for i in range(step * batch_size, (step + 1) * batch_size)]
    return torch.stack([image for image, _ in items]), [caption for _, caption in items]


def _save_checkpoint(path: Path, step: int, vlm: VLM, optimizer, recipe: Recipe, losses: list[float],
                     elapsed_s: float) -> None:
    save_checkpoint(path, {"step": step, "model": vlm.model.state_dict(), "optimizer": optimizer.state_dict(),
                           "recipe": asdict(recipe), "losses": losses, "elapsed_s": elapsed_s})


def _load_checkpoint(path: Path, recipe: Recipe) -> dict:
    state = read_checkpoint(path)
    if state.get("recipe") != asdict(recipe):
        raise ParameterError(f"checkpoint {path} was written by another recipe ({state.get('recipe')}); "
                             f"use another output folder, or delete it to start over.")
    return state


def pretrain(arch: str | Recipe, out: str | os.PathLike | None = None, *, checkpoint_every: int = 100,
             progress: bool | None = None, log: Callable[[str], None] | None = None,
             stop_after: int | None = None, device=None, **overrides) -> tuple[VLM, list[float]]:
    """Pretrain a world model; returns it (eval mode, float32) and the loss of every step.

    ``out`` keeps ``checkpoint.pt`` (every ``checkpoint_every`` steps, written atomically) and the run
    resumes from it. ``overrides`` change the recipe (``steps=2``); ``stop_after`` ends the run early
    after that many steps (a checkpoint is written), as an interruption would. ``device`` trains there
    (the shipped weights were trained on the CPU; another device gives other numbers).
    """
    recipe = recipe_for(arch, **overrides)
    schedule = recipe.stage()
    vlm = initial_model(recipe).to(resolve_device(device) if device else "cpu").train()
    optimizer = _optimizer(vlm, recipe)
    loss_fn = open_clip.ClipLoss()
    pairs = world_data.build_pretrain()
    start, losses, elapsed = 0, [], 0.0
    checkpoint = Path(out) / "checkpoint.pt" if out is not None else None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if checkpoint.exists():
            state = _load_checkpoint(checkpoint, recipe)
            resume_state(vlm.model, optimizer, state, checkpoint)
            start, losses, elapsed = state["step"], list(state["losses"]), state.get("elapsed_s", 0.0)
    end = recipe.steps if stop_after is None else min(recipe.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=recipe.steps, desc=f"pretrain {recipe.arch}", unit="step",
               disable=None if progress is None else not progress)
    clock = time.perf_counter()
    for step in bar:
        images, texts = _batch(pairs, step, recipe.batch_size)
        images = images.to(vlm.device)
        rate = learning_rate(schedule, step)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["scale"]
        loss = loss_fn(vlm.encode_image(images, normalize=True), vlm.encode_text(texts, normalize=True),
                       vlm.model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            vlm.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == end):
            _save_checkpoint(checkpoint, done, vlm, optimizer, recipe, losses,
                             elapsed + time.perf_counter() - clock)
        if log is not None and (done % max(1, recipe.steps // 10) == 0 or done == end):
            log(f"step {done}/{recipe.steps} loss {losses[-1]:.4f} ({time.perf_counter() - clock:.0f} s)")
    bar.close()
    return vlm.eval(), losses


def command(recipe: Recipe) -> str:
    """The ``vlmshield`` command line that runs ``recipe``."""
    default = RECIPES.get(recipe.arch, Recipe(recipe.arch))
    flags = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed"}
    changed = [f"{flag} {getattr(recipe, key)}" for key, flag in flags.items()
               if getattr(recipe, key) != getattr(default, key)]
    return " ".join(["vlmshield world pretrain", recipe.arch, *changed])


def export(vlm: VLM, recipe: Recipe, out: str | os.PathLike, *, train_time_s: float | None = None,
           metrics: bool = True, progress: bool | None = None) -> dict:
    """Write ``clip-<arch>.safetensors`` (half precision) and its card ``clip-<arch>.json`` into ``out``
    (``export_packaged``; the safetensors header also records the recipe).

    The card's numbers are measured on the half-precision weights read back through the card: what users load.
    """
    name = f"clip-{recipe.arch}"
    description = f"Tiny CLIP ({recipe.arch}) pretrained contrastively on world-pretrain by the world's recipe."
    info = {"arch": recipe.arch, "method": "none", "description": description,
            "training_data": "world-pretrain", "recipe": asdict(recipe), "command": command(recipe),
            "train_time_s": train_time_s, "environment": environment()}
    card = export_packaged(vlm, name, out, info, metadata={"recipe": json.dumps(asdict(recipe))})
    if metrics:
        exported, = (c for c in packaged_cards(out, build=architecture) if c.name == name)
        card["metrics"] = measure_for_card(exported.load(), "world", progress=progress)
        (Path(out) / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
