"""The TTC-aware adaptive attack: BPDA+EOT through TTC, while keeping tau above the threshold.

TTC counterattacks only images whose tau (the relative embedding drift under its random noise) is
below ``tau_thres``; above it, an image receives the random noise alone, against which an EOT attack
is strong. So the attack maximises, for each draw of TTC's noise,

    loss(classifier(purify(x)), y)  -  tau_weight * relu((1 + margin) * tau_thres - tau(x)),

with the gradient of the first term passed through ``purify`` as the identity (BPDA: TTC's sign steps
are piecewise constant in x, so the identity is the exact gradient almost everywhere inside the box) and
the gradient of tau taken exactly. ``tau_weight`` 1 and ``margin`` 0.1 are this library's choice (the
paper has no adaptive attack): on the world a weight of 10 let the penalty's gradient outvote the
loss's and weakened the attack (see the plugin's README). On the world, where clean and adversarial tau
hardly differ, the penalty rarely wins anything; it is there for models whose gate does separate them.
"""

from __future__ import annotations

import torch

from vlmshield.api import EOTAttack, ParameterError, resolve_loss

from .ttc import Counterattacked


class TTCAware(EOTAttack):
    name = "ttc-aware"
    description = ("Adaptive attack on TTC: BPDA+EOT through the counterattack plus a penalty that keeps the "
                   "image's tau above TTC's threshold, so that the gate does not fire.")

    def __init__(self, eps: float = 4 / 255, alpha: float = 1 / 255, steps: int = 10, eot: int = 4,
                 tau_weight: float = 1.0, margin: float = 0.1, norm: str = "Linf", loss="ce",
                 random_start: bool = True, seed: int = 0):
        for key, value in (("tau_weight", tau_weight), ("margin", margin)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ParameterError(f"{key} must be a number >= 0; got {value!r}.")
        super().__init__(eps=eps, alpha=alpha, steps=steps, eot=eot, tau_weight=float(tau_weight),
                         margin=float(margin), norm=norm, loss=loss, random_start=random_start, seed=seed)

    def objective(self, classifier, x, y, generator):
        if not isinstance(classifier, Counterattacked):
            raise ParameterError(f"ttc-aware attacks a classifier defended by TTC; got {type(classifier).__name__} "
                                 f"(bpda-eot attacks any test-time defense).")
        loss = resolve_loss(self.loss)(classifier.straight_through(x, generator), y)
        tau = classifier.tau(x, classifier.noise(x.detach(), generator))
        return loss - self.tau_weight * torch.relu((1 + self.margin) * classifier.threshold - tau)
