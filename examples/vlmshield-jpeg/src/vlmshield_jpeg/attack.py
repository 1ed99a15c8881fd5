"""``diff-jpeg``: PGD through a differentiable approximation of the defense's JPEG (Shin & Song 2017).

Each step classifies the real JPEG of the current images, so the loss is the defended classifier's own, and takes
its gradient through ``differentiable_jpeg`` at the defense's quality: the forward value is the real codec's output
and the backward pass the approximation's (``approx + (real - approx).detach()``). Unlike BPDA's identity, the
approximation's gradient knows which frequencies and colours the codec keeps.

Two choices are this plugin's, not the paper's (the plugin's README has the measurements behind them):

- the cubic rounding's derivative, ``3 (v - round(v))**2``, weighs each DCT coefficient by where it lies inside its
  quantization step, which changes from step to step; the steps accumulate the gradients with ``momentum`` (as
  MI-FGSM, Dong et al. 2018: L1-normalised gradients, the step along the sign of the sum), which averages that
  out;
- no random start by default: a random point of the ball is a perturbation the codec mostly erases, which a
  few steps of this gradient do not make up for.

The attack returns, per image, the iterate of highest loss on the defended classifier (the final one included).
It attacks only classifiers defended by ``jpeg``.
"""

from __future__ import annotations

import torch

from vlmshield.api import (
    Attack,
    ParameterError,
    ascent_direction,
    check_logits,
    is_labels,
    project,
    random_start,
    resolve_loss,
)

from .codec import differentiable_jpeg
from .defense import JPEGCompressed


class DiffJPEG(Attack):
    name = "diff-jpeg"
    description = ("Adaptive attack on jpeg: PGD whose gradient goes through a differentiable JPEG at the "
                   "defense's quality (Shin & Song 2017), its forward pass through the real codec.")
    adaptive = True

    def __init__(self, eps: float = 4 / 255, alpha: float = 1 / 255, steps: int = 10, momentum: float = 0.75,
                 norm: str = "Linf", loss="ce", random_start: bool = False, seed: int = 0):
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ParameterError(f"momentum must be a number from 0 to 1; got {momentum!r}.")
        super().__init__(eps=eps, alpha=alpha, steps=steps, momentum=float(momentum), norm=norm, loss=loss,
                         random_start=random_start, seed=seed)

    @staticmethod
    def defended_losses(classifier: JPEGCompressed, x: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
        """Per-image losses of the defended classifier at ``x`` (the real codec's output classified), whose
        gradient is the differentiable approximation's."""
        approx = differentiable_jpeg(x, classifier.quality)
        real = classifier.purify(x.detach())
        return loss_fn(classifier.classifier(approx + (real - approx).detach()), y)

    def perturb(self, classifier, x, y, generator):
        if not isinstance(classifier, JPEGCompressed):
            raise ParameterError(f"diff-jpeg attacks a classifier defended by jpeg; got {type(classifier).__name__} "
                                 f"(bpda-eot attacks any test-time defense).")
        loss_fn = resolve_loss(self.loss)
        if is_labels(y):
            with torch.no_grad():
                check_logits(classifier(x[:1]), y[:1])
        x_adv = random_start(x, self.eps, self.norm, generator) if self.random_start else x.clone()
        best, best_loss = x_adv.clone(), torch.full((len(x),), -torch.inf, device=x.device)
        velocity = torch.zeros_like(x)

        def keep(images, losses):  # the iterate of highest loss so far, per image
            better = losses > best_loss
            best[better], best_loss[better] = images[better], losses[better].to(best_loss.dtype)

        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            losses = self.defended_losses(classifier, x_adv, y, loss_fn)
            (grad,) = torch.autograd.grad(losses.sum(), x_adv)
            keep(x_adv.detach(), losses.detach())
            velocity = self.momentum * velocity + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = project(x_adv.detach() + self.alpha * ascent_direction(velocity, self.norm), x, self.eps, self.norm)
        with torch.no_grad():
            keep(x_adv, self.defended_losses(classifier, x_adv, y, loss_fn))
        return best
