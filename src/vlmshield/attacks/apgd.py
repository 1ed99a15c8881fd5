"""APGD: Auto-PGD (Croce & Hein, ICML 2020), the first attack of AutoAttack.

A budget of ``steps`` iterations is split at checkpoints w_0 = 0, w_1 = 0.22 N, ... with intervals that
shrink by 0.03 N down to 0.06 N. The step size starts at 2 eps; at each checkpoint it is halved, and
the iterate restarted from the best point so far, for every sample whose loss increased in at most
``rho`` of the steps since the last checkpoint, or whose step size was not halved at the last checkpoint
although its best loss did not improve since (a test skipped at the first checkpoint): ``halve_step``.
As in AutoAttack's reference code, the start point is not part of that count: at the first
checkpoint step 1 is compared with zero (it counts as a rise when its loss is positive, which a
cross-entropy nearly always is and a DLR loss is not while the point is still classified correctly).
Each step moves with momentum 0.75 (none on the first step).
For labels, a point counts as fooled as soon as any iterate is misclassified, and that iterate is
kept; for other targets (embedding losses) the highest-loss iterate is returned. A fooled point's result
can no longer change, so later iterations compute the model only on the points still standing (and stop
when none is left): the same numbers, at a fraction of the cost on an undefended model.
"""

from __future__ import annotations

import torch

from vlmshield.api import (
    LOSSES,
    Attack,
    TargetedLoss,
    ascent_direction,
    clean_logits,
    is_labels,
    loss_and_grad,
    per_sample_norm,
    project,
    resolve_loss,
)


class APGD(Attack):
    name = "apgd-ce"
    description = ("Auto-PGD (Croce & Hein 2020) on cross-entropy (or any loss): step size halved at "
                   "checkpoints when progress stalls, momentum 0.75, best iterate kept.")

    def __init__(self, eps: float = 4 / 255, steps: int = 100, norm: str = "Linf", n_restarts: int = 1,
                 loss="ce", rho: float = 0.75, seed: int = 0):
        super().__init__(eps=eps, steps=steps, norm=norm, n_restarts=n_restarts, loss=loss, rho=rho, seed=seed)

    def perturb(self, classifier, x, y, generator: torch.Generator) -> torch.Tensor:
        loss_fn = resolve_loss(self.loss)
        labels = is_labels(y)
        x_adv = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        if labels:  # as AutoAttack: points misclassified when clean are left as they are
            robust = clean_logits(classifier, x, y, self.name).argmax(dim=1) == y
        else:
            robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.n_restarts):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv, fooled, loss = self.run(classifier, x[idx], y[idx], loss_fn, generator, labels)
            better = fooled | (loss > best_loss[idx])
            x_adv[idx[better]] = adv[better]
            best_loss[idx] = torch.maximum(best_loss[idx], loss)
            robust[idx[fooled]] = False
        return x_adv

    def start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """AutoAttack's start: a random point on the boundary of the ball (Linf: max |delta| = eps)."""
        if self.norm == "Linf":
            t = torch.rand(x.shape, generator=generator) * 2 - 1
            delta = self.eps * t / t.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1)
        else:
            t = torch.randn(x.shape, generator=generator)
            delta = self.eps * t / per_sample_norm(t)
        return (x + delta.to(x.device, x.dtype)).clamp(0, 1)

    def run(self, classifier, x, y, loss_fn, generator, labels: bool):
        """One restart. Returns (adversarial images, fooled mask, best loss)."""
        n_iter, eps, norm = self.steps, self.eps, self.norm
        interval = max(int(0.22 * n_iter), 1)
        interval_min, interval_decrease = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)

        # a fooled point's result is final: compute only the others, when the loss is per-sample (a known loss)
        compact = labels and (loss_fn in LOSSES.values() or isinstance(loss_fn, TargetedLoss))
        x_adv = self.start(x, generator)
        loss, grad, output = loss_and_grad(classifier, x_adv, y, loss_fn, check=True)
        fooled = output.argmax(1) != y if labels else torch.zeros_like(loss, dtype=torch.bool)
        x_fooled = x_adv.clone()
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        step = torch.full((x.shape[0], 1, 1, 1), 2.0 * eps, device=x.device, dtype=x.dtype)
        record = torch.zeros((n_iter, x.shape[0]), device=loss.device, dtype=loss.dtype)  # loss after each step
        x_prev = x_adv
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones_like(fooled)  # no "stalled" test at the first checkpoint
        since_check = 0
        for i in range(n_iter):
            with torch.no_grad():
                momentum = 0.75 if i > 0 else 1.0
                z = project(x_adv + step * ascent_direction(grad, norm), x, eps, norm)
                x_new = project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x, eps, norm)
                x_prev, x_adv = x_adv, x_new
            if compact and fooled.all():  # nothing left to attack: what is returned can no longer change
                break
            loss, grad = loss.clone(), grad.clone()
            active = (~fooled).nonzero().squeeze(1) if compact else torch.arange(x.shape[0], device=x.device)
            active_loss = loss_fn.subset(active) if isinstance(loss_fn, TargetedLoss) else loss_fn
            loss[active], grad[active], output = loss_and_grad(classifier, x_adv[active], y[active], active_loss)
            with torch.no_grad():
                if labels:
                    wrong = torch.zeros_like(fooled)
                    wrong[active] = output.argmax(1) != y[active]
                    x_fooled[wrong] = x_adv[wrong]
                    fooled |= wrong
                improved = loss > loss_best
                x_best[improved], grad_best[improved] = x_adv[improved], grad[improved]
                loss_best[improved] = loss[improved]
                record[i] = loss
                since_check += 1
                if since_check == interval:
                    reduce = halve_step(record, i, interval, self.rho, reduced_at_check, loss_best_at_check,
                                        loss_best)
                    reduced_at_check, loss_best_at_check = reduce, loss_best.clone()
                    step[reduce] /= 2
                    x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                    since_check, interval = 0, max(interval - interval_decrease, interval_min)
        if labels:
            return torch.where(fooled.view(-1, 1, 1, 1), x_fooled, x_best), fooled, loss_best
        return x_best, fooled, loss_best


def halve_step(record: torch.Tensor, i: int, k: int, rho: float, reduced_at_check: torch.Tensor,
               loss_best_at_check: torch.Tensor, loss_best: torch.Tensor) -> torch.Tensor:
    """Which samples halve their step size at the checkpoint reached by step ``i + 1``: AutoAttack's rule.

    ``record`` (steps, N) holds each sample's loss after every step (row ``i`` after step ``i + 1``) and
    zeros in the rows of steps not taken yet; ``k`` is the number of steps since the last checkpoint.
    A sample oscillates when its loss rose in at most ``rho * k`` of those ``k`` steps, each compared with
    the row before it. Rows are indexed as AutoAttack indexes them, so the row before row 0 is the
    last row: at the first checkpoint, step 1 is compared with that row, still zero (with a single-step
    budget, with itself). A sample stalled when its step size was not halved at the last checkpoint
    (``reduced_at_check`` false; all true before the first) and its best loss did not improve since
    (``loss_best_at_check >= loss_best``). Returns the boolean mask of either.
    """
    rows = torch.arange(i - k, i + 1, device=record.device) % record.shape[0]
    window = record[rows]
    increases = (window[1:] > window[:-1]).sum(dim=0)
    oscillating = increases <= k * rho
    stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
    return oscillating | stalled
