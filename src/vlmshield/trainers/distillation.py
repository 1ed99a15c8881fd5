"""The distillation trainer (``distillation``): a student taught by a frozen teacher on unlabelled images.

Each step reads this process's images of the next global batch (labelled images, image-caption pairs and a
domain pair's target are read as their images only) and steps the optimizer on the method's loss. A method
(``Distillation``) says what is its own: the teacher (a frozen copy of the model as training starts, by
default; another model by name with ``load_model``), any other frozen references, the student (the model
itself, by default; a network built from it, such as a fresh one of the teacher's architecture), which
parameters train (all, by default) and the loss. The trainer returns the student. The default loss reads the
outputs of the model and of the teacher as logits, always: the temperature-scaled KL divergence of the
student's softmax from the teacher's. The model is any classifier ([0, 1] images -> logits); a VLM's forward
is its image embedding, not logits, so a VLM is distilled as a classifier (``vlm.zero_shot(classnames)``) or
by a method whose ``loss`` compares embeddings. A DART-like method overrides ``loss`` to craft adversarial
images on the student against the teacher's pseudo-labels. The random numbers of a step (dropout, a random
start) come from its ``step_seed``: the global generator is seeded with it for the step and restored after,
and a new student is built under the run's seed, so a resumed run ends with the weights of an uninterrupted
one.

Processes: under torchrun each process takes its share of every global batch and the gradients are
averaged, so N processes train the weights one process trains with the whole batch when the loss is a
mean over the batch's images (the default is). BatchNorm layers of the student compute their batch
statistics per process, on that process's share: with them N processes differ from one (convert the
student with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` to share the statistics).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vlmshield.api import (
    VLM,
    Batches,
    DomainPair,
    ParameterError,
    TrainConfig,
    Trainer,
    TrainingDefense,
    check_number,
    check_takes,
    derive_seed,
    evaluate,
    frozen_copy,
    kl_divergence,
    rank_and_world,
    resolve_device,
    run_training,
)


class Distillation(TrainingDefense):
    """A student (the model) taught by a frozen teacher on unlabelled images; ``temperature`` T softens
    both softmaxes of the default loss, KL(teacher / T || student / T) * T^2 averaged over the batch.

    ``teacher`` and ``references`` are built once, before the first step (and before a checkpoint is
    read: a resumed run builds them from the model as given, as the first part did); they receive the
    data as it was given to the trainer (a domain pair keeps its labelled source). ``loss`` receives
    the run's ``TrainConfig`` and current ``Stage`` through ``refs["config"]`` and ``refs["stage"]``.
    """

    defense_kind: ClassVar[str] = "domain-adaptation"
    trainer: ClassVar[str] = "distillation"

    def __init__(self, temperature: float = 1.0, **params):
        super().__init__(temperature=check_number("temperature", temperature, positive=True), **params)

    def teacher(self, model: nn.Module, data) -> nn.Module:
        """The frozen teacher: a copy of the model as training starts."""
        return frozen_copy(model)

    def references(self, model: nn.Module, data) -> dict:
        """Frozen models and tensors the loss needs (moved to the training device): the teacher."""
        return {"teacher": self.teacher(model, data)}

    def student(self, model: nn.Module, data) -> nn.Module:
        """The network that trains and is returned, built after the references: the model itself."""
        return model

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters that train: all of the model's."""
        return list(model.parameters())

    def loss(self, model: nn.Module, x: torch.Tensor, refs: dict, *, step_seed: int) -> torch.Tensor:
        """KL(softmax(teacher(x) / T) || softmax(model(x) / T)) * T^2, the mean over the batch; the model
        is in train mode, and ``step_seed`` seeds the step's random draws (unused here)."""
        if isinstance(model, VLM):
            raise ParameterError(f"{self.name or 'distillation'}'s loss compares logits and a VLM gives image "
                                 f"embeddings: distill vlm.zero_shot(classnames), or override loss.")
        with torch.no_grad():
            teacher = refs["teacher"](x)
        t = self.temperature
        return kl_divergence(teacher / t, model(x) / t).mean() * t * t


class DistillationTrainer(Trainer):
    name = "distillation"
    description = "Distillation: a student taught by a frozen teacher on unlabelled images, with the method's loss."
    takes = "unlabelled"
    method_type = Distillation

    def train(self, model: nn.Module, data, method: Distillation, config: TrainConfig, *, out=None, val_data=None,
              device=None, progress=None, log=None, stop_after=None) -> nn.Module:
        """Train ``model`` (see ``Trainer``); ``val_data`` (labelled, or a domain pair's target test set)
        gives the clean accuracy of the model on ``val_n`` of its images every ``val_every`` steps."""
        images = check_takes(data, self.takes, f"the {self.name} trainer")
        config = config.check()
        device = resolve_device(device)
        model.to(device)
        refs = {key: value.to(device) if isinstance(value, (nn.Module, torch.Tensor)) else value
                for key, value in method.references(model, data).items()}
        with torch.random.fork_rng(devices=[]):  # a new student's layers start from the run's seed
            torch.manual_seed(derive_seed(config.seed, "student"))
            model = method.student(model, data).to(device)

        def step_loss(step: int, items: list, refs: dict) -> torch.Tensor:
            x = torch.stack([item[0] for item in items]).to(device)
            model.train()
            step_seed = derive_seed(config.seed, "distillation", step, rank_and_world()[0])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(step_seed)
                return method.loss(model, x, refs, step_seed=step_seed)

        validate = None if val_data is None else lambda: _validate(model, val_data, config, device)
        return run_training(model, method, config, batches=Batches(images, config.batch_size, config.seed),
                            step_loss=step_loss, refs=refs, parameters=method.trainable(model), out=out,
                            device=device, progress=progress, log=log, stop_after=stop_after, validate=validate,
                            trainer=self)


@torch.no_grad()
def _validate(model: nn.Module, data, config: TrainConfig, device) -> dict:
    """Clean accuracy (zero-shot for a VLM) on ``val_n`` images of ``data`` (labelled images, or a domain
    pair's target test set), measured by the evaluation engine."""
    data = data.target_test if isinstance(data, DomainPair) else data
    record = evaluate(model, data, evaluator="zero-shot" if isinstance(model, VLM) else "accuracy", n=config.val_n,
                      batch_size=min(config.val_n, 100), device=device, progress=False, seed=config.seed)
    return {"clean_acc": record["average"]["clean_acc"]}
