"""APGD-T: targeted APGD on the targeted DLR loss, one run per target class (Croce & Hein 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmshield.api import Attack, ParameterError, TargetedLoss, clean_logits, targeted_dlr_loss

from .apgd import APGD


def _targeted_ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, target, reduction="none")


def targeted_ce_loss(target: torch.Tensor) -> TargetedLoss:
    """Minus the cross-entropy towards ``target``: the targeted loss when DLR is undefined (< 4 classes)."""
    return TargetedLoss(_targeted_ce, target)


class APGDT(APGD):
    name = "apgd-t"
    description = ("Targeted APGD on the targeted DLR loss, run once per target: the next most likely classes "
                   "at the clean image, min(9, classes - 1) of them by default; targeted CE below 4 classes.")

    def __init__(self, eps: float = 4 / 255, steps: int = 100, norm: str = "Linf", n_restarts: int = 1,
                 n_target_classes: int | None = None, rho: float = 0.75, seed: int = 0):
        if n_target_classes is not None and (isinstance(n_target_classes, bool) or
                                             not isinstance(n_target_classes, int) or n_target_classes < 1):
            raise ParameterError(f"n_target_classes must be 1 or more; got {n_target_classes!r}.")
        Attack.__init__(self, eps=eps, steps=steps, norm=norm, n_restarts=n_restarts,
                        n_target_classes=n_target_classes, rho=rho, seed=seed)

    def perturb(self, classifier, x, y, generator: torch.Generator) -> torch.Tensor:
        logits = clean_logits(classifier, x, y, self.name)
        classes = logits.shape[1]
        targets = min(self.n_target_classes or 9, classes - 1)
        ranked = logits.argsort(dim=1)
        x_adv = x.clone()
        robust = logits.argmax(1) == y
        for rank in range(2, targets + 2):
            for _ in range(self.n_restarts):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    return x_adv
                target = ranked[idx, -rank]
                loss_fn = targeted_dlr_loss(target) if classes >= 4 else targeted_ce_loss(target)
                adv, fooled, _ = self.run(classifier, x[idx], y[idx], loss_fn, generator, labels=True)
                x_adv[idx[fooled]] = adv[fooled]
                robust[idx[fooled]] = False
        return x_adv
