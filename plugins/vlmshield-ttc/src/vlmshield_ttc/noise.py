"""Random uniform noise in an Linf ball: TTC's random start, and the paper's RN baseline as a defense."""

from __future__ import annotations

import torch

from vlmshield.api import ParameterError, Purifier, TestTimeDefense, parse_eps

PAPER = ("Xing, Zhao & Sebe. CLIP is Strong Enough to Fight Back: Test-time Counterattacks towards Zero-shot "
         "Adversarial Robustness of CLIP. CVPR 2025.")


def uniform_noise(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """delta ~ U(-eps, eps) per pixel, cut so that x + delta stays in [0, 1]."""
    if generator is None:
        draw = torch.rand(x.shape, device=x.device, dtype=x.dtype)
    else:
        draw = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
    return (x + (2 * draw - 1) * eps).clamp(0, 1) - x


def budget(value, what: str) -> float:
    """An Linf budget or step in [0, 1] pixel units ('4/255', 4, 0.0157)."""
    value = parse_eps(value, what)
    if value > 1:
        raise ParameterError(f"{what} must be at most 1 (the whole pixel range); got {value}.")
    return value


class NoisedInput(Purifier):
    """classifier(x + U(-eps, eps))."""

    def __init__(self, classifier, eps: float):
        super().__init__(classifier)
        self.eps = eps

    def purify(self, x, generator=None):
        return x + uniform_noise(x.detach(), self.eps, generator)


class RandomNoise(TestTimeDefense):
    name = "random-noise"
    description = ("The RN baseline of the TTC paper: classify x + uniform noise in the Linf ball of eps "
                   "(TTC with no counterattack step).")
    paper = PAPER
    randomized = True
    pixel_params = frozenset({"eps"})

    def __init__(self, eps: float = 4 / 255):
        super().__init__(eps=budget(eps, "eps"))

    def wrap(self, classifier, calibration=None):
        return NoisedInput(classifier, self.eps)
