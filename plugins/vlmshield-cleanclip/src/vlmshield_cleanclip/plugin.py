"""CleanCLIP: backdoor removal from CLIP by fine-tuning with in-modal self-supervision (Bansal et al., ICCV 2023).

The poisoned model is fine-tuned on clean image-caption pairs with CLIP's loss plus an in-modal term that
contrasts each image with the augmented views of the batch's images and each caption with the augmented
captions, so that each tower re-learns its own modality and the trigger-target shortcut between them weakens:

    L = clip_weight * L_CLIP(I, T) + inmodal_weight * 1/2 [CE(s * I @ I'^T) + CE(s * T @ T'^T)]

with I, T the unit image and caption features of the global batch, I', T' those of their augmented versions,
s the logit scale, and CE the cross-entropy of each row against its own augmented view (one direction, as the
reference). The cross-modal term sees the original images and captions only. Images are augmented with
torchvision's AutoAugment (ImageNet policy), one draw per image; captions with EDA (``eda.py``). The
original and augmented images go through the image tower in one batch, as in the reference.

Sources (CleanCLIP's code, ``nishadsinghi/CleanCLIP``: ``src/train.py``, ``src/parser.py``, ``src/main.py``,
``src/data.py``; its augmentation and schedule files come from CyCLIP, ``goel-shashank/CyCLIP``:
``utils/augment_image.py``, ``utils/augment_text.py``, ``utils/eda.py``, ``src/trainer/scheduler.py``):
``clip_weight`` and ``inmodal_weight`` default to 1 (parser); AdamW with betas (0.9, 0.999), eps 1e-8 and
weight decay 0.1, none on parameters whose names contain ``bn``, ``ln``, ``bias`` or ``logit_scale`` (parser,
main); a linear warm-up to the learning rate, then a cosine to 0 (scheduler: vlmshield's ``Stage`` schedule is
the same curve). The README's cleaning run: batch 64, lr 1e-5, 10 epochs, 50 warm-up steps.

Deviations:
- the logit scale stays frozen at the poisoned model's (the reference trains it, clamped to at most 100);
- EDA's synonyms come from a small table instead of WordNet (``eda.py``), and each caption is augmented
  afresh at every step (the reference augments each caption once, when it reads the CSV);
- AutoAugment runs on the dataset's [0, 1] images at their resolution (quantised to 8 bits for it), where the
  reference applies it to the full-size image file before resizing; its draws come from a generator seeded
  per step, so a resumed run ends as an uninterrupted one does;
- bfloat16 autocast on GPUs replaces the reference's fp16 AMP.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from vlmshield.api import (
    ContrastiveFineTuning,
    ParameterError,
    Stage,
    clip_loss,
    derive_seed,
    gather_features,
    hookimpl,
)

from .eda import eda

PAPER = ("Bansal, Singhi, Yang, Yin, Grover and Chang, CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal "
         "Contrastive Learning (ICCV 2023, arXiv 2303.03323)")
#: The paper's cleaning set: 100,000 clean CC3M pairs; one epoch at batch 64 (the reference drops the last,
#: partial batch).
PAPER_PAIRS, PAPER_BATCH, PAPER_EPOCHS = 100_000, 64, 10
PAPER_STEPS = PAPER_EPOCHS * (PAPER_PAIRS // PAPER_BATCH)
#: Names of the parameters the reference exempts from weight decay (substrings).
NO_DECAY_KEYS = ("bn", "ln", "bias", "logit_scale")


def inmodal_loss(features: torch.Tensor, augmented: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of each row's unit feature against the unit features of the augmented views, its own
    view the class, with logits ``logit_scale * cosine`` (float32)."""
    logits = logit_scale.float() * F.normalize(features.float(), dim=-1) @ F.normalize(augmented.float(), dim=-1).t()
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def autoaugment(images: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's AutoAugment with the ImageNet policy, one draw per image, on [0, 1] images (of any size):
    quantised to 8 bits for it (its posterize, solarize and equalize need integer pixels) and returned in [0, 1]
    with the input's shape, dtype and device. The draws come from torch's generator seeded with ``seed`` inside
    a fork of the random state, which the call leaves as it found it."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy  # at use: importing torchvision is slow

    transform = AutoAugment(AutoAugmentPolicy.IMAGENET)
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        augmented = torch.stack([transform(image) for image in pixels])
    return augmented.to(images.dtype) / 255


class CleanCLIP(ContrastiveFineTuning):
    name = "cleanclip"
    description = ("CleanCLIP: CLIP's loss on clean pairs plus in-modal self-supervision, each image against the "
                   "AutoAugment views and each caption against the EDA views of the batch (Bansal et al.).")
    paper = PAPER
    presets = {
        "paper": {"model": "clip-vitb32", "dataset": "captions-csv:/path/to/cc3m-100k.csv", "config": {
            "stages": [Stage("cleanclip", steps=PAPER_STEPS, lr=1e-5, warmup=50, weight_decay=0.1)],
            "batch_size": PAPER_BATCH, "betas": (0.9, 0.999), "seed": 0,
            "checkpoint_every": PAPER_PAIRS // PAPER_BATCH, "log_every": 100}},
        "world": {"model": "poisoned-badnet-stripes-tinyvit4", "dataset": "world-captions", "config": {
            "stages": [Stage("cleanclip", steps=300, lr=1e-4, warmup=20, weight_decay=1e-4)],
            "batch_size": 128, "betas": (0.9, 0.98), "seed": 0, "checkpoint_every": 100, "log_every": 20}},
    }

    def __init__(self, clip_weight: float = 1.0, inmodal_weight: float = 1.0, eda_alpha: float = 0.1):
        for label, weight in (("clip_weight", clip_weight), ("inmodal_weight", inmodal_weight)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
                raise ParameterError(f"{label} is a loss weight, a finite number >= 0; got {weight!r}.")
        if clip_weight == 0 and inmodal_weight == 0:
            raise ParameterError("clip_weight and inmodal_weight are both 0: there would be no loss to train on.")
        if isinstance(eda_alpha, bool) or not isinstance(eda_alpha, (int, float)) or not 0 <= eda_alpha <= 1:
            raise ParameterError(f"eda_alpha is the share of a caption's words EDA edits, in [0, 1]; got "
                                 f"{eda_alpha!r}.")
        super().__init__(clip_weight=float(clip_weight), inmodal_weight=float(inmodal_weight),
                         eda_alpha=float(eda_alpha))

    def no_decay(self, vlm):
        """As the reference: the parameters whose names contain ``bn``, ``ln``, ``bias`` or ``logit_scale``."""
        return [p for name, p in vlm.model.named_parameters() if any(key in name for key in NO_DECAY_KEYS)]

    def augment_captions(self, captions: list[str], generator: random.Random) -> list[str]:
        """One EDA augmentation of each caption (``eda.eda`` at ``eda_alpha`` for its four operations)."""
        a = self.eda_alpha
        return [eda(caption, generator, alpha_sr=a, alpha_ri=a, alpha_rs=a, p_rd=a) for caption in captions]

    def captions(self, captions: list[str], step_seed: int) -> list[str]:
        """The captions, then their augmented versions: ``loss`` receives 2n rows of token ids for n pairs."""
        return [*captions, *self.augment_captions(captions, random.Random(derive_seed(step_seed, "eda")))]

    def augment_images(self, images: torch.Tensor, step_seed: int) -> torch.Tensor:
        """AutoAugment (ImageNet policy) of each [0, 1] image, seeded by the step."""
        return autoaugment(images, derive_seed(step_seed, "autoaugment"))

    def loss(self, vlm, images, texts, refs, *, step_seed):
        n = len(images)
        if len(texts) != 2 * n:
            raise ParameterError(f"CleanCLIP's loss takes the token ids of the {n} captions followed by those of "
                                 f"their augmented versions (what its captions() returns), {2 * n} rows; got "
                                 f"{len(texts)}.")
        image_features = vlm.encode_image(torch.cat([images, self.augment_images(images, step_seed)]))
        text_features = vlm.model.encode_text(texts)
        image, augmented_image = gather_features(image_features[:n]), gather_features(image_features[n:])
        text, augmented_text = gather_features(text_features[:n]), gather_features(text_features[n:])
        scale = vlm.model.logit_scale.exp()
        crossmodal = clip_loss(image, text, scale)
        inmodal = (inmodal_loss(image, augmented_image, scale) + inmodal_loss(text, augmented_text, scale)) / 2
        return self.clip_weight * crossmodal + self.inmodal_weight * inmodal


@hookimpl
def register_defenses(register):
    register(CleanCLIP)
