"""The adversarial fine-tuning trainer (``adversarial``): one loop for TeCoA, FARE, PMG-AFT, HPT-GPD.

Each step reads the next batch of labelled images, crafts adversarial images with the inner attack (any
registered attack, on the module and target the method names, with the method's loss), then steps the
optimizer on the method's outer loss. A method (``AdversarialFineTuning``) says only what is its own:
the frozen references it needs (the original model, a proxy, class text embeddings), what the attack
sees, the outer loss, and which parameters train (the vision tower by default). The loop
(``vlmshield.engine.training``) owns the schedule, resume, processes and precision; robust validation
runs APGD-CE with ``val_steps`` iterations at the training eps on ``val_n`` held-out images.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from vlmshield.api import (
    VLM,
    Batches,
    LabelledImages,
    TrainConfig,
    Trainer,
    TrainingDefense,
    derive_seed,
    evaluate,
    frozen_copy,
    get_host,
    rank_and_world,
    resolve_device,
    run_training,
    signature_defaults,
)

#: RobustVLM's training attack, shared by its FARE and TeCoA runs: Linf PGD-10, step 1/255, sign momentum
#: 0.9, random start (``TrainConfig`` fields, for presets).
ROBUSTVLM_ATTACK = {"attack": "pgd", "attack_steps": 10, "attack_alpha": 1 / 255,
                    "attack_params": {"momentum": 0.9, "random_start": True}}


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
    trainer: ClassVar[str] = "adversarial"
    adversarial: ClassVar[bool] = True

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


class AdversarialTrainer(Trainer):
    name = "adversarial"
    description = "Adversarial fine-tuning: an inner attack on each labelled batch, the method's outer loss."
    takes = "labelled"
    method_type = AdversarialFineTuning

    def train(self, model: VLM, data, method: AdversarialFineTuning, config: TrainConfig, *, out=None,
              val_data=None, device=None, progress=None, log=None, stop_after=None) -> VLM:
        config = config.check()
        device = resolve_device(device)
        model.to(device)
        refs = method.references(model, data)
        attack = inner_attack(config)

        def step_loss(step: int, items: list, refs: dict) -> torch.Tensor:
            x = torch.stack([image for image, _ in items]).to(device)
            y = torch.as_tensor([int(label) for _, label in items]).to(device)
            module, target, attack_loss = method.attack_target(model, x, y, refs)
            attack_for_step = attack if attack_loss is None else replace_loss(attack, attack_loss)
            x_adv = attack_for_step(module, x, target, seed=derive_seed(config.seed, "attack", step,
                                                                        rank_and_world()[0]))
            model.train()
            return method.loss(model, x_adv, x, y, target, refs)

        validate = None if val_data is None else lambda: _validate(model, val_data, config, device)
        return run_training(model, method, config, batches=Batches(data, config.batch_size, config.seed),
                            step_loss=step_loss, refs=refs, parameters=method.trainable(model), out=out,
                            device=device, progress=progress, log=log, stop_after=stop_after, validate=validate,
                            trainer=self)


def _validate(vlm: VLM, val_data, config: TrainConfig, device) -> dict:
    record = evaluate(vlm, val_data, attack="apgd-ce", eps=config.eps, steps=config.val_steps, n=config.val_n,
                      batch_size=min(config.val_n, 100), device=device, progress=False, seed=config.seed)
    return {"clean_acc": record["average"]["clean_acc"], "robust_acc": record["average"]["robust_acc"]}


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
