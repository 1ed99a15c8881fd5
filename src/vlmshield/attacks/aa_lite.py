"""aa-lite: APGD-CE, then APGD-T on the points still robust.

These are the first two attacks of AutoAttack's standard version (which adds FAB-T and Square), and
the pair RobustVLM evaluates CLIP with. Each point's result is its worst case over the two attacks.
As in RobustVLM, binary tasks get APGD-CE only. AutoAttack's standard version runs APGD-CE once
(``n_restarts=1``, the default); RobustVLM's zero-shot protocol keeps 5 restarts.
"""

from __future__ import annotations

import torch

from vlmshield.api import Attack, clean_logits

from .apgd import APGD
from .apgd_t import APGDT


class AALite(Attack):
    name = "aa-lite"
    description = ("APGD-CE then APGD-T on the points still robust (AutoAttack's first two attacks, "
                   "as RobustVLM evaluates CLIP); APGD-CE only for binary tasks.")

    def __init__(self, eps: float = 4 / 255, steps: int = 100, norm: str = "Linf", n_restarts: int = 1,
                 n_target_classes: int | None = None, seed: int = 0):
        super().__init__(eps=eps, steps=steps, norm=norm, n_restarts=n_restarts, n_target_classes=n_target_classes,
                         seed=seed)
        APGD(eps=eps, steps=steps, norm=norm, n_restarts=n_restarts)  # their checks, before any image is attacked
        APGDT(eps=eps, steps=steps, norm=norm, n_target_classes=n_target_classes)

    def perturb(self, classifier, x, y, generator: torch.Generator) -> torch.Tensor:
        logits = clean_logits(classifier, x, y, self.name)
        stages = [APGD(eps=self.eps, steps=self.steps, norm=self.norm, n_restarts=self.n_restarts)]
        if logits.shape[1] > 2:
            stages.append(APGDT(eps=self.eps, steps=self.steps, norm=self.norm,
                                n_target_classes=self.n_target_classes))
        x_adv = x.clone()
        robust = logits.argmax(1) == y
        for stage in stages:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = stage.perturb(classifier, x[idx], y[idx], generator)
            with torch.no_grad():
                fooled = classifier(adv).argmax(1) != y[idx]
            x_adv[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
        return x_adv
