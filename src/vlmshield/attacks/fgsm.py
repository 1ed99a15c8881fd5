"""FGSM: one signed gradient step of size eps (Goodfellow et al., ICLR 2015)."""

from __future__ import annotations

from vlmshield.api import Attack

from .pgd import PGD


class FGSM(PGD):
    name = "fgsm"
    description = "Fast gradient sign method (Goodfellow et al. 2015): a single step of size eps, no random start."

    def __init__(self, eps: float = 4 / 255, norm: str = "Linf", loss="ce", seed: int = 0):
        Attack.__init__(self, eps=eps, norm=norm, loss=loss, seed=seed)
        self.alpha, self.steps, self.random_start = self.eps, 1, False
