"""PAR: Perturb and Recover, backdoor removal from CLIP (Singh, Croce and Hein).

The poisoned model is fine-tuned on clean image-caption pairs with CLIP's loss (recover) while its unit
embeddings are pushed away from those of a frozen copy of the poisoned model, on the same augmented input
(perturb), until their batch-mean squared distance reaches ``tau``:

    L = L_CLIP - 1/2 [T_tau(S_img) + T_tau(S_txt)],   S = mean_n ||u_n - u_n^P||^2,   T_tau(S) = S if S <= tau else 0

over the global batch (both towers' features gathered from every process). Unit vectors make S = 2 - 2 mean
cos, in [0, 4]; the default tau = 2.15 is slightly past orthogonal. Once S > tau the term is 0 and only CLIP's
loss acts, so in gradient terms the push is the hinge 1/2 (tau - S)+ (a test checks it). The logit scale stays
frozen at the poisoned model's, as the reference detaches it.

The augmentation is the reference's, on [0, 1] pixels: with probability 0.5 noise ``max(0, N(0, 0.2^2))`` is
added (the reference clips the noise to [0, 1] before adding it, so it only brightens; kept as it is) and the
image clipped to [0, 1]; with probability 0.5 one square covering 0.5-1% of the image is filled with the model's
pixel mean (the reference erases to 0 after normalisation, the same colour). Student and frozen poisoned model
see the same augmented image.

The ``paper`` preset is the reference's run: OpenAI's ViT-B/32, fine-tuned on a CC3M CSV (``captions-csv``) with a
global batch of 2048 for 244 steps (2 epochs of 250,000 pairs over 4 processes); AdamW with betas (0.9, 0.98),
weight decay 1e-4 on matrices only (not on biases, one-dimensional parameters or layer/batch norms); the
learning rate falls linearly from 3e-5 to 3e-6 over the first half, then decays as a cosine to 1e-9. Where we
deviate: under torchrun the processes' gradients are averaged (the reference bypasses DDP's forward, so each of
its processes stepped on its own gradient), and the reference's fp16 AMP is bfloat16 autocast on GPUs here.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vlmshield.api import (
    ContrastiveFineTuning,
    ParameterError,
    Stage,
    clip_loss,
    frozen_copy,
    gather_features,
    hookimpl,
    packaged_cards,
)

#: The world models PAR cleaned (``bench/par_world.py``), packaged as ``vlmshield train --package`` writes them.
WEIGHTS = Path(__file__).parent / "weights"
PAPER = ("Singh, Croce and Hein, Perturb and Recover: Fine-tuning for Effective Backdoor Removal from CLIP "
         "(arXiv 2412.00727)")
#: The reference's run: 250,000 pairs, 2 epochs of a global batch of 2048 (122 steps per epoch per process).
PAPER_STEPS = 244
#: The world preset's run: the reference's schedule at twice its learning rates, on 128-pair batches.
WORLD_STEPS = 300


def threshold(distance: torch.Tensor, tau: float) -> torch.Tensor:
    """T_tau: the distance where it is at most ``tau``, else 0 (no push once the models are that far apart)."""
    return distance * (distance <= tau).to(distance.dtype)


def perturb_term(features: torch.Tensor, poisoned_features: torch.Tensor, tau: float) -> torch.Tensor:
    """T_tau of the batch-mean squared distance between the unit features and the poisoned model's."""
    distance = (F.normalize(features.float(), dim=-1) - F.normalize(poisoned_features.float(), dim=-1))
    return threshold(distance.pow(2).sum(-1).mean(), tau)


def aligned_distance(features: torch.Tensor, poisoned_features: torch.Tensor) -> torch.Tensor:
    """The batch-mean squared distance of the unit features to the poisoned model's after the best rotation
    of the former (orthogonal Procrustes): 2 - 2 ||U^T U_P||_* / n, in [0, S]. A rotation of the embedding
    space, which changes neither CLIP's loss nor any zero-shot decision, leaves it unchanged."""
    unit = F.normalize(features.detach().float(), dim=-1)
    poisoned = F.normalize(poisoned_features.detach().float(), dim=-1)
    return (2 - 2 * torch.linalg.matrix_norm(unit.t() @ poisoned, ord="nuc") / len(unit)).clamp_min(0)


def linear_cka(features: torch.Tensor, poisoned_features: torch.Tensor) -> torch.Tensor:
    """Linear CKA of two batches of features (Kornblith et al.): 1 for the same features up to a rotation and
    a scale, near 0 for unrelated ones."""
    a = features.detach().float() - features.detach().float().mean(0)
    b = poisoned_features.detach().float() - poisoned_features.detach().float().mean(0)
    cross = torch.linalg.matrix_norm(b.t() @ a) ** 2
    return cross / (torch.linalg.matrix_norm(a.t() @ a) * torch.linalg.matrix_norm(b.t() @ b)).clamp_min(1e-12)


def augmentation(noise_p: float, noise_std: float, erase_p: float, erase_area) -> dict:
    """The augmentation's parameters, checked."""
    for name, p in (("noise_p", noise_p), ("erase_p", erase_p)):
        if not 0 <= p <= 1:
            raise ParameterError(f"{name} is a probability, in [0, 1]; got {p!r}.")
    low, high = erase_area
    if not 0 < low <= high < 1:
        raise ParameterError(f"erase_area is a range of fractions of the image, 0 < low <= high < 1; got "
                             f"{erase_area!r}.")
    return {"noise_p": noise_p, "noise_std": noise_std, "erase_p": erase_p, "erase_area": (float(low), float(high))}


class PAR(ContrastiveFineTuning):
    name = "par"
    description = ("PAR: CLIP's loss on clean pairs while both towers' unit embeddings are pushed away from the frozen "
                   "poisoned model's until their mean squared distance reaches tau (Singh, Croce and Hein).")
    paper = PAPER
    presets = {
        "paper": {"model": "clip-vitb32", "dataset": "captions-csv:/path/to/cc3m-250k.csv", "config": {
            "stages": [Stage("perturb", steps=PAPER_STEPS // 2, lr=3e-6, lr_start=3e-5, warmup=0, weight_decay=1e-4),
                       Stage("recover", steps=PAPER_STEPS - PAPER_STEPS // 2, lr=3e-6, lr_end=1e-9, warmup=0,
                             weight_decay=1e-4)],
            "batch_size": 2048, "betas": (0.9, 0.98), "seed": 8, "checkpoint_every": 50, "log_every": 10}},
        "world": {"model": "poisoned-badnet-stripes-tinyvit4", "dataset": "world-captions", "config": {
            "stages": [Stage("perturb", steps=WORLD_STEPS // 2, lr=6e-6, lr_start=6e-5, warmup=0, weight_decay=1e-4),
                       Stage("recover", steps=WORLD_STEPS - WORLD_STEPS // 2, lr=6e-6, lr_end=6e-9, warmup=0,
                             weight_decay=1e-4)],
            "batch_size": 128, "betas": (0.9, 0.98), "seed": 8, "checkpoint_every": 100, "log_every": 25}},
    }
    #: PAR (SynC): the same runs on synthetic pairs only: SynthCLIP's generated images and captions (a CSV of
    #: them), and on the world pairs drawn fresh, none of which the poisoning saw.
    presets["synthetic"] = {**presets["paper"], "dataset": "captions-csv:/path/to/synthclip-500k.csv"}
    presets["world-synthetic"] = {**presets["world"], "dataset": "world-captions-fresh"}

    def __init__(self, tau: float = 2.15, noise_p: float = 0.5, noise_std: float = 0.2, erase_p: float = 0.5,
                 erase_area: tuple[float, float] = (0.005, 0.01)):
        if not 0 < tau <= 4:
            raise ParameterError(f"tau is a mean squared distance of unit vectors, in (0, 4]; got {tau!r}.")
        super().__init__(tau=tau, **augmentation(noise_p, noise_std, erase_p, erase_area))

    def references(self, vlm, data):
        return {"poisoned": frozen_copy(vlm)}

    def no_decay(self, vlm):
        """Biases, one-dimensional parameters and norms (names with ``ln`` or ``bn``), as the reference."""
        return [p for name, p in vlm.model.named_parameters()
                if name != "logit_scale" and (p.ndim < 2 or "ln" in name or "bn" in name)]

    def augment(self, images: torch.Tensor, pixel_mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The reference's augmentation of [0, 1] images (module docstring), one draw per image."""
        n, _, height, width = images.shape
        noise = (torch.randn(images.shape, generator=generator) * self.noise_std).clamp(0, 1).to(images.device)
        noisy = torch.rand(n, generator=generator) < self.noise_p
        images = torch.where(noisy.view(-1, 1, 1, 1).to(images.device), (images + noise).clamp(0, 1), images)
        low, high = self.erase_area
        areas = low + (high - low) * torch.rand(n, generator=generator)
        erased = torch.rand(n, generator=generator) < self.erase_p
        corners = torch.rand(n, 2, generator=generator)
        images = images.clone()
        for i in erased.nonzero().flatten().tolist():
            side = max(1, min(height, width, round((areas[i].item() * height * width) ** 0.5)))
            top = int(corners[i, 0].item() * (height - side + 1))
            left = int(corners[i, 1].item() * (width - side + 1))
            images[i, :, top:top + side, left:left + side] = pixel_mean.view(-1, 1, 1).to(images.dtype)
        return images

    def loss(self, vlm, images, texts, refs, *, step_seed):
        images = self.augment(images, vlm.pixel_mean, torch.Generator().manual_seed(step_seed))
        image_features = gather_features(vlm.encode_image(images))
        text_features = gather_features(vlm.model.encode_text(texts))
        recover = clip_loss(image_features, text_features, vlm.model.logit_scale.exp().detach())
        return recover - self.perturb(images, texts, image_features, text_features, refs)

    def perturb(self, images, texts, image_features, text_features, refs) -> torch.Tensor:
        """1/2 [T_tau(S_img) + T_tau(S_txt)] against the frozen poisoned model, on the same inputs. Each step
        also reports, for both towers, S, the distance after the best rotation (``aligned_distance``) and the
        linear CKA to the poisoned model (``refs["diagnostics"]``, hence the training log): PAR's term can be
        met by rotating both towers, which leaves the backdoor intact; the rotation-invariant ones cannot."""
        poisoned = refs["poisoned"]
        with torch.no_grad():
            poisoned_image = gather_features(poisoned.encode_image(images))
            poisoned_text = gather_features(poisoned.model.encode_text(texts))
        diagnostics = refs.setdefault("diagnostics", {})
        for tower, features, reference in (("img", image_features, poisoned_image),
                                           ("txt", text_features, poisoned_text)):
            diagnostics[f"S_{tower}"] = perturb_term(features.detach(), reference, 4.0)
            diagnostics[f"S_{tower}_aligned"] = aligned_distance(features, reference)
            diagnostics[f"cka_{tower}"] = linear_cka(features, reference)
        return (perturb_term(image_features, poisoned_image, self.tau)
                + perturb_term(text_features, poisoned_text, self.tau)) / 2


class CLIPFineTune(PAR):
    """The fine-tuning baseline: PAR without the perturb term (CLIP's loss, PAR's augmentation, recipe and
    decay), the model it starts from not kept."""

    name = "clip-finetune"
    description = ("Plain contrastive fine-tuning on clean pairs with PAR's augmentation and recipe: the backdoor "
                   "removal baseline that PAR adds its perturb term to.")
    presets = PAR.presets

    def __init__(self, noise_p: float = 0.5, noise_std: float = 0.2, erase_p: float = 0.5,
                 erase_area: tuple[float, float] = (0.005, 0.01)):
        ContrastiveFineTuning.__init__(self, **augmentation(noise_p, noise_std, erase_p, erase_area))

    def references(self, vlm, data):
        return {}

    def perturb(self, images, texts, image_features, text_features, refs) -> torch.Tensor:
        return image_features.new_zeros(())


@hookimpl
def register_defenses(register):
    register(PAR, CLIPFineTune)


@hookimpl
def register_models(register):
    from .released import released_cards  # here, not at the top: released.py imports this module's PAPER

    register(*released_cards(), *packaged_cards(WEIGHTS, paper=PAPER, license="MIT"))
