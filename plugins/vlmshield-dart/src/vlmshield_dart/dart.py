"""Step 2 of DART: the ``dart`` method of the ``distillation`` trainer (losses in ``losses``).

The run's model is the teacher, frozen: a domain-adapted ``adaptation-net`` (step 1, the ``uda`` trainer, or
any folder that holds one) or a CLIP, whose zero-shot classifier over the pair's classes is the teacher.
The student reads unlabelled target images only (the distillation trainer takes a domain pair's target
and nothing else of it). Every step:

1. the teacher's logits t(x) and features g_T(x) on the clean batch, its pseudo-labels argmax t(x);
2. x_adv = I-FGSM against the student (eval mode) on the pseudo-labels, ``attack_steps`` sign steps of
   eps/2 within the run's ``eps`` (``TrainConfig.eps``) in [0, 1] pixels;
3. the student's logits on x and x_adv and its features g_S(x) in train mode, and ``dart_loss``.

The student, as the reference builds it (``init="pretrained"``): the teacher's architecture with its
backbone's pretrained weights and new bottleneck and head (drawn from the run's seed), and without the
adversary of step 1. ``init="teacher"`` starts from the teacher's weights instead. A CLIP teacher's student is
a copy of the CLIP whose image tower trains; its features are the unnormalized image embeddings and its
logits the teacher's zero-shot head (the class text embeddings, fixed) on them, so ``init`` does not
apply. The adaptation network's backbone trains at ``backbone_lr`` times the heads' rate (0.1, as step 1).

Presets: ``paper`` is the released configuration (an MDD teacher on Office-31 A->W at ``--model``, batch 32,
SGD Nesterov momentum 0.9, weight decay 1e-3, lr 0.005 decayed as (1 + 0.001 t)^-0.75, 10,000 steps; I-FGSM 10
steps; eps 6/255, the pixel width of the code's 0.1 on normalized tensors, 0.1 x 0.226 x 255); ``world``
distils a ``world-da/palette`` teacher (``--model local-dir:...``, from ``vlmshield train dann --preset
world``) at 2/255 (I-FGSM-5), 600 steps of 64, lr 0.03, beta 1; ``world-clip`` distils the world's CLIP
``clip-tinyrn``, zero-shot on the pair's classes, into its own image tower.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlmshield.api import (
    VLM,
    Distillation,
    DomainPair,
    ImageClassifier,
    ParameterError,
    Stage,
    ZeroShotClassifier,
    check_number,
    frozen_copy,
)

from .losses import WEIGHTINGS, dart_loss, ifgsm
from .network import AdaptationNet, adaptation_classifier, without_adversary

INITS = ("pretrained", "teacher")
#: The released step 2's optimizer and attack.
PAPER_CONFIG = {"stages": [Stage("robustify", steps=10_000, lr=0.005, warmup=0, weight_decay=1e-3,
                                 schedule="inverse", decay_rate=0.001)],
                "batch_size": 32, "optimizer": "sgd", "nesterov": True, "eps": 6 / 255, "attack_steps": 10,
                "checkpoint_every": 1000, "log_every": 100}
WORLD_STEPS = 600
WORLD_CONFIG = {"stages": [Stage("robustify", steps=WORLD_STEPS, lr=0.03, warmup=0, weight_decay=1e-3,
                                 schedule="inverse", decay_rate=0.001)],
                "batch_size": 64, "optimizer": "sgd", "nesterov": True, "eps": 2 / 255, "attack_steps": 5,
                "checkpoint_every": 200, "log_every": 50, "val_every": 200, "val_n": 500}


class DART(Distillation):
    name = "dart"
    description = ("DART: a domain-adapted teacher distilled into a robust student on unlabelled target images "
                   "(adversarial and clean tempered KL, confidence-weighted, and a feature MSE).")
    paper = "Huang et al., Unsupervised Robust Domain Adaptation: Paradigm, Theory and Algorithm (IJCV 2026)"
    defense_kind: ClassVar[str] = "domain-adaptation"
    adversarial: ClassVar[bool] = True
    presets = {"paper": {"model": "local-dir:runs/mdd-paper/model", "dataset": "office31/amazon-to-webcam",
                         "config": PAPER_CONFIG},
               "world": {"model": "local-dir:runs/dann-world/model", "dataset": "world-da/palette",
                         "config": WORLD_CONFIG, "params": {"beta": 1.0}},
               "world-clip": {"model": "clip-tinyrn", "dataset": "world-da/palette", "config": WORLD_CONFIG,
                              "params": {"beta": 1.0}}}

    def __init__(self, beta: float = 0.1, temperature: float = 2.0, weighting: str = "sample",
                 init: str = "pretrained", backbone_lr: float = 0.1, **params):
        if weighting not in WEIGHTINGS:
            raise ParameterError(f"weighting is one of {', '.join(WEIGHTINGS)}; got {weighting!r}.")
        if init not in INITS:
            raise ParameterError(f"init is one of {', '.join(INITS)} (the student's start); got {init!r}.")
        super().__init__(temperature=temperature, beta=check_number("beta", beta), weighting=weighting,
                         init=init, backbone_lr=check_number("backbone_lr", backbone_lr, positive=True), **params)

    def teacher(self, model: nn.Module, data) -> nn.Module:
        """The frozen teacher: the adaptation network (without its adversary), or a CLIP's zero-shot classifier
        over the pair's classes."""
        check_pair(data)
        if isinstance(model, VLM):
            return frozen_copy(model.zero_shot(data.classnames, data.source.templates))
        _check_adaptation_net(model)
        return without_adversary(frozen_copy(model))

    def student(self, model: nn.Module, data) -> nn.Module:
        if isinstance(model, VLM):
            return copy.deepcopy(model)
        net = model.model
        if self.init == "teacher":
            return without_adversary(copy.deepcopy(model))
        args = model.architecture["args"]
        student = adaptation_classifier(args["backbone"], model.num_classes, classnames=model.classnames,
                                        pretrained=True, bottleneck_dim=net.bottleneck[0].out_features,
                                        head_layers=args.get("head_layers", 1), dropout=args.get("dropout", 0.5))
        student.image_size, student.mean, student.std = model.image_size, model.mean, model.std
        student.pixel_mean.copy_(model.pixel_mean)
        student.pixel_std.copy_(model.pixel_std)
        return student

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        if isinstance(model, VLM):
            return list(model.model.visual.parameters())
        return list(model.parameters())

    def lr_scales(self, model: nn.Module) -> dict[int, float]:
        if isinstance(model, VLM):
            return {}
        return {id(p): self.backbone_lr for p in model.model.backbone.parameters()}

    def loss(self, model: nn.Module, x: torch.Tensor, refs: dict, *, step_seed: int) -> torch.Tensor:
        teacher, config = refs["teacher"], refs["config"]
        with torch.no_grad():
            teacher_logits, teacher_features = logits_and_features(teacher, x)
        classifier = _classifier(model, teacher)
        x_adv = ifgsm(classifier, x, teacher_logits.argmax(1), eps=config.eps, steps=config.attack_steps)
        clean_logits, student_features = logits_and_features(classifier, x)
        loss, parts = dart_loss(teacher_logits, clean_logits, classifier(x_adv), teacher_features,
                                student_features, beta=self.beta, temperature=self.temperature,
                                weighting=self.weighting)
        refs["diagnostics"].update(parts)
        return loss


def logits_and_features(classifier: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An adaptation network's logits and bottleneck features, or a CLIP zero-shot classifier's logits and
    unnormalized image embeddings, for [0, 1] images ``x``."""
    if isinstance(classifier, ImageClassifier):
        net = classifier.model
        features = net.features(classifier.preprocess(x))
        return net.head(features), features
    features = classifier.vlm.encode_image(x, normalize=False)
    logits = classifier.logit_scale * F.normalize(features, dim=-1) @ classifier.class_embeddings.t()
    return logits.to(features.dtype), features


def _classifier(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """The student as a classifier: itself, or a CLIP student with the teacher's zero-shot head."""
    if isinstance(student, VLM):
        return ZeroShotClassifier(student, teacher.class_embeddings, teacher.logit_scale, teacher.classnames,
                                  teacher.templates)
    return student


def _check_adaptation_net(model: nn.Module) -> None:
    if not (isinstance(model, ImageClassifier) and isinstance(model.model, AdaptationNet)):
        raise ParameterError(f"DART's teacher is a domain-adapted adaptation network (a folder written by "
                             f"`vlmshield train dann|mdd|source-only`) or a CLIP; got a {type(model).__name__}.")


def check_pair(data) -> None:
    """DART adapts to a domain pair's target; anything else is refused in one sentence."""
    if not isinstance(data, DomainPair):
        raise ParameterError("DART distils on a domain pair's unlabelled target images; give a domain pair "
                             "(world-da/palette, office31/amazon-to-webcam, ...).")
