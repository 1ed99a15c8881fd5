"""CW: PGD on the Carlini-Wagner margin loss, as the CLIP robustness papers (TeCoA, TTC) evaluate it."""

from __future__ import annotations

from vlmshield.api import Attack, margin_loss

from .pgd import PGD


class CW(PGD):
    name = "cw"
    description = ("PGD on the Carlini-Wagner margin max_{i!=y} z_i - z_y, capped at kappa (kappa=50 as in "
                   "TeCoA's and TTC's CW evaluation); bounded by eps like every attack here.")

    def __init__(self, eps: float = 4 / 255, alpha: float = 1 / 255, steps: int = 10, kappa: float = 50.0,
                 norm: str = "Linf", random_start: bool = True, seed: int = 0):
        Attack.__init__(self, eps=eps, alpha=alpha, steps=steps, kappa=float(kappa), norm=norm,
                        random_start=random_start, seed=seed)

    def loss_fn(self):
        return margin_loss(self.kappa)
