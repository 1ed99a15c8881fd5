"""BPDA+EOT: PGD through a test-time defense (Athalye, Carlini & Wagner, ICML 2018).

Each step averages the loss gradient over ``eot`` draws of the defense's randomness (Expectation over
Transformation). Through a ``Purifier`` (a defense that changes its input, then classifies) the gradient
passes ``purify`` as the identity (Backward Pass Differentiable Approximation), so defenses that are
not differentiable, or whose gradients are second order (TTC's counterattack), are attacked at the
purified point. Through any other defended module the gradient is the module's own. The attack is
adaptive: the evaluation engine gives it the defended classifier.
"""

from __future__ import annotations

from vlmshield.api import EOTAttack, Purifier, resolve_loss


class BPDAEOT(EOTAttack):
    name = "bpda-eot"
    description = ("PGD through a test-time defense: gradients pass the defense's input purification as the "
                   "identity (BPDA) and are averaged over `eot` draws of its randomness (EOT).")

    def __init__(self, eps: float = 4 / 255, alpha: float = 1 / 255, steps: int = 10, eot: int = 4,
                 norm: str = "Linf", loss="ce", random_start: bool = True, seed: int = 0):
        super().__init__(eps=eps, alpha=alpha, steps=steps, eot=eot, norm=norm, loss=loss,
                         random_start=random_start, seed=seed)

    def objective(self, classifier, x, y, generator):
        output = classifier.straight_through(x, generator) if isinstance(classifier, Purifier) else classifier(x)
        return resolve_loss(self.loss)(output, y)
