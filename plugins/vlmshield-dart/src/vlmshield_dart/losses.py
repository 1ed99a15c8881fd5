"""DART's step 2: robustification of a domain-adapted model by disentangled distillation (Huang et al., IJCV 2026).

A frozen teacher T, any model adapted to the target domain (step 1), is distilled into a student S on unlabelled
target images x alone. The student learns robustness from adversarial examples crafted against itself, and
inherits the adaptation through the clean prediction and feature terms, so the two objectives do not entangle:

    L = beta (L_def + L_pred) + L_feat
    L_def  = mean_i w_i KL(softmax(t(x_i)/T) || softmax(s(x_i^adv)/T))     (robust, on the student's attack)
    L_pred = mean_i w_i KL(softmax(t(x_i)/T) || softmax(s(x_i)/T))         (clean prediction)
    L_feat = mean over all elements of (g_S(x) - g_T(x))^2                  (clean bottleneck features)
    w_i    = 1 - H(softmax(t(x_i))) / log C,   H(p) = -sum_c p_c log(p_c + 1e-5)

with the reference's beta = 0.1 and temperature T = 2, and no T^2 factor on the KL terms (the reference has none).
The confidence weight w is about 0 for a uniform teacher and about 1 for a confident one. It is not clamped: the
1e-5 inside the log lets it exceed 1 by up to 1e-5 / log C. The teacher gets no gradient. x^adv comes from
``ifgsm``: untargeted I-FGSM (BIM) against the student, in eval mode, on the teacher's pseudo-labels
argmax_c t_c(x): the built-in ``pgd`` without a random start, 10 steps of eps/2 by default.

Where we deviate from the released code (fuxianghuang1/DART):

- The weighting. The code multiplies the batch-mean KL, a scalar, by the vector of weights and sums, so its
  loss is mean_i KL_i x sum_i w_i. That is a batch-level scale of about B mean(w), not a per-sample
  reweighting. Our default (``weighting="sample"``) is the paper's reading, mean_i w_i KL_i.
  ``weighting="batch"`` keeps the code's behaviour.
- The attack's space. The code applies eps = 0.1 and the [0, 1] clip to ImageNet-normalised tensors. That is
  eps ~ 0.1 x 0.226 ~ 5.8/255 per channel in pixels, and the clip sets every negative normalised value to 0,
  which distorts images heavily. Here the budget and the clip act on [0, 1] pixels, the threat model that the
  evaluation measures. The step stays half the budget, as the code's 0.05 for its 0.1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlmshield.api import InputError, ParameterError, get_host, kl_divergence

#: The reference's epsilon inside the entropy's log.
ENTROPY_EPS = 1e-5
#: The two readings of the confidence weighting (module docstring): the paper's, then the released code's.
WEIGHTINGS = ("sample", "batch")


def confidence_weight(teacher_logits: torch.Tensor) -> torch.Tensor:
    """w = 1 - H(softmax(t)) / log C per sample, (N,), float32 and without gradient."""
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] < 2:
        raise InputError(f"teacher logits must have shape (N, classes) with at least 2 classes; got "
                         f"{tuple(teacher_logits.shape)}.")
    with torch.no_grad():
        p = F.softmax(teacher_logits.float(), dim=1)
        entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1)
        return 1 - entropy / math.log(teacher_logits.shape[1])


def tempered_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) per sample, (N,), with no T^2 factor; the teacher is detached."""
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ParameterError(f"the temperature must be positive and finite; got {temperature!r}.")
    if teacher_logits.shape != student_logits.shape:
        raise InputError(f"teacher and student logits must have the same shape; got {tuple(teacher_logits.shape)} "
                         f"and {tuple(student_logits.shape)}.")
    return kl_divergence(teacher_logits.detach() / temperature, student_logits / temperature)


def weighted(kl: torch.Tensor, weight: torch.Tensor, weighting: str) -> torch.Tensor:
    """mean_i w_i KL_i (``sample``) or mean_i KL_i x sum_i w_i (``batch``, the released code)."""
    if weighting == "sample":
        return (weight * kl).mean()
    return kl.mean() * weight.sum()


def dart_loss(teacher_logits: torch.Tensor, student_logits_clean: torch.Tensor, student_logits_adv: torch.Tensor,
              teacher_features: torch.Tensor, student_features: torch.Tensor, *, beta: float = 0.1,
              temperature: float = 2.0, weighting: str = "sample") -> tuple[torch.Tensor, dict[str, float]]:
    """beta (L_def + L_pred) + L_feat (module docstring), and its parts as floats for the log: ``def``, ``pred``
    (both weighted, before beta), ``feat`` and ``weight`` (the batch's mean confidence weight)."""
    if weighting not in WEIGHTINGS:
        raise ParameterError(f"weighting must be 'sample' (per-sample weights, the paper's reading) or 'batch' (a "
                             f"batch-level scale, the released code's); got {weighting!r}.")
    if not (isinstance(beta, (int, float)) and 0 <= beta < math.inf):
        raise ParameterError(f"beta must be finite and >= 0; got {beta!r}.")
    if teacher_features.shape != student_features.shape:
        raise InputError(f"teacher and student features must have the same shape; got "
                         f"{tuple(teacher_features.shape)} and {tuple(student_features.shape)}.")
    weight = confidence_weight(teacher_logits)
    defense = weighted(tempered_kl(teacher_logits, student_logits_adv, temperature), weight, weighting)
    prediction = weighted(tempered_kl(teacher_logits, student_logits_clean, temperature), weight, weighting)
    feature = F.mse_loss(student_features.float(), teacher_features.detach().float())
    loss = beta * (defense + prediction) + feature
    parts = {"def": defense.item(), "pred": prediction.item(), "feat": feature.item(), "weight": weight.mean().item()}
    return loss, parts


def ifgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 4 / 255, steps: int = 10,
          alpha: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted I-FGSM (BIM) in pixel space against ``labels``: the built-in ``pgd`` attack without its random
    start, ``steps`` sign steps of ``alpha`` (default eps/2) up the cross-entropy, each projected onto the L-inf
    ball of radius eps around ``images`` and clamped to [0, 1]; the model runs in eval mode with its parameters
    frozen, and both are restored. (The reference ascends the summed cross-entropy; a sign step is the same for
    the mean.) ``generator`` is accepted for the attacks' call shape and is unused: there is no random draw."""
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps <= 1):
        raise ParameterError(f"eps is a budget on [0, 1] pixels, above 0 and at most 1; got {eps!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ParameterError(f"steps must be a whole number, 1 or more; got {steps!r}.")
    alpha = eps / 2 if alpha is None else alpha
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < math.inf):
        raise ParameterError(f"alpha, the step size, must be positive and finite; got {alpha!r}.")
    if not (labels.ndim == 1 and not labels.is_floating_point() and len(labels) == len(images)):
        raise InputError(f"labels must be one class index per image, shape ({len(images)},); got dtype "
                         f"{labels.dtype} and shape {tuple(labels.shape)}.")
    attack = get_host().create("attack", "pgd", eps=float(eps), alpha=float(alpha), steps=steps, random_start=False)
    return attack(model, images, labels)
