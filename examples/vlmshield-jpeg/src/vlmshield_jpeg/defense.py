"""The ``jpeg`` test-time defense: classify each image after a real JPEG compression.

JPEG compression as an input transformation against adversarial examples was studied by Dziugaite, Ghahramani
& Roy (2016) and by Guo, Rana, Cisse & van der Maaten (ICLR 2018, "Countering adversarial images using input
transformations"); quality 75, the default here, is Guo et al.'s setting. The codec is deterministic and has no
useful gradient (its roundings are piecewise constant), so a gradient attack on the defended classifier sees
nothing: it is evaluated with adaptive attacks, ``bpda-eot`` (the gradient passed through the codec as the
identity) and ``diff-jpeg`` (the gradient of a differentiable approximation of the same codec).
"""

from __future__ import annotations

import torch

from vlmshield.api import ParameterError, Purifier, TestTimeDefense

from .codec import jpeg

PAPER = ("Guo, Rana, Cisse & van der Maaten. Countering Adversarial Images using Input Transformations. ICLR 2018 "
         "(after Dziugaite, Ghahramani & Roy. A study of the effect of JPG compression on adversarial images. 2016).")


def check_quality(quality: object) -> int:
    """``quality`` if it is a whole number from 1 to 100 (JPEG's quality scale), else a ParameterError."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ParameterError(f"the JPEG quality must be a whole number from 1 to 100; got {quality!r}.")
    return quality


class JPEGCompressed(Purifier):
    """``classifier(jpeg(x, quality))``: each image compressed and decompressed by the real codec."""

    def __init__(self, classifier: torch.nn.Module, quality: int):
        super().__init__(classifier)
        self.quality = check_quality(quality)

    def purify(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return jpeg(x, self.quality)


class JPEG(TestTimeDefense):
    name = "jpeg"
    description = ("JPEG compression of each input at `quality` before classifying it (Dziugaite et al. 2016; Guo "
                   "et al. 2018); a real, non-differentiable codec, evaluated with bpda-eot and diff-jpeg.")
    paper = PAPER
    randomized = False
    adaptive_attacks = ("diff-jpeg", "bpda-eot")

    def __init__(self, quality: int = 75):
        super().__init__(quality=check_quality(quality))

    def wrap(self, classifier, calibration=None):
        return JPEGCompressed(classifier, self.quality)
