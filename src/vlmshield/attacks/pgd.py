"""PGD: projected gradient descent (Madry et al., ICLR 2018), Linf or L2, any loss."""

from __future__ import annotations

import torch

from vlmshield.api import Attack, ParameterError, ascent_direction, loss_and_grad, project, random_start, resolve_loss


class PGD(Attack):
    name = "pgd"
    description = ("Projected gradient descent (Madry et al. 2018): fixed-size sign steps (Linf) or "
                   "normalized gradient steps (L2) from a random start; returns the last iterate. "
                   "momentum > 0 steps along the accumulated directions (RobustVLM's training attack: 0.9).")

    def __init__(self, eps: float = 4 / 255, alpha: float = 1 / 255, steps: int = 10, norm: str = "Linf",
                 random_start: bool = True, loss="ce", momentum: float = 0.0, seed: int = 0):
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ParameterError(f"momentum must be in [0, 1); got {momentum!r}.")
        super().__init__(eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                         loss=loss, momentum=float(momentum), seed=seed)

    def loss_fn(self):
        return resolve_loss(self.loss)

    def perturb(self, classifier, x, y, generator: torch.Generator) -> torch.Tensor:
        loss_fn = self.loss_fn()
        x_adv = random_start(x, self.eps, self.norm, generator) if self.random_start else x.clone()
        velocity, momentum = torch.zeros_like(x), self.params.get("momentum", 0.0)  # subclasses may not have it
        for step in range(self.steps):
            _, grad, _ = loss_and_grad(classifier, x_adv, y, loss_fn, check=step == 0)
            direction = ascent_direction(grad, self.norm)
            if momentum:  # v <- dir(momentum * v + dir(grad)), as RobustVLM's training PGD
                velocity = ascent_direction(momentum * velocity + direction, self.norm)
                direction = velocity
            x_adv = project(x_adv + self.alpha * direction, x, self.eps, self.norm)
        return x_adv
