"""vlmshield's APGD side by side with the reference implementation (fra31/auto-attack, as packaged on
PyPI under the import name ``pyautoattack``): robust accuracy and time at equal budgets.

Models: small CNNs trained in seconds on vlmshield.testing's toy task (4 and 10 classes), 128 test
images each, Linf. The two implementations draw different random starts, so single points may differ;
the robust accuracies should agree to within a few points, and neither should be consistently weaker.

The last column runs one APGD run of each implementation from the same start point (the reference's
``x_init``; APGD-T towards the most likely wrong class), so that the rest is deterministic: "identical"
means the same points were fooled and every point left standing ends at the same best iterate and
loss (how many are left says how much of the run the comparison covers). Any step-size decision taken
differently, at the first checkpoint as at the others, would move the iterates.

    pip install --no-deps pyautoattack   # `make bench` does this
    python bench/apgd_vs_autoattack.py [--eps 4/255,8/255] [--steps 10,100]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import vlmshield as vs
from vlmshield.testing import ToyCNN, toy_task


def train(num_classes: int, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = toy_task(n=1024, num_classes=num_classes, seed=seed)
    torch.manual_seed(seed)
    model = ToyCNN(num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = torch.randint(len(x), (64,))
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_x, test_y = toy_task(n=128, num_classes=num_classes, seed=seed + 1)
    return model.eval(), test_x, test_y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def same_start(model, x, y, eps: float, steps: int, name: str) -> str:
    """One run of vlmshield's APGD and one of the reference's from the same start: do they agree?"""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    ours = vs.attack(name, eps=eps, steps=steps)
    generator = torch.Generator().manual_seed(0)
    start = ours.start(x, generator)
    ours.start = lambda x, generator: start.clone()
    if name == "apgd-t":
        with torch.no_grad():
            target = model(x).argsort(dim=1)[:, -2]
        loss_fn = vs.core.targeted_dlr_loss(target)
        reference = APGDAttack_targeted(model, n_iter=steps, eps=eps, seed=0, device="cpu")
        reference.y_target = target
    else:
        loss_fn = vs.core.resolve_loss("ce")
        reference = APGDAttack(model, n_iter=steps, eps=eps, seed=0, device="cpu", loss="ce")
    reference.init_hyperparam(x)
    best, robust, loss, _ = reference.attack_single_run(x, y, x_init=start.clone())
    adv, fooled, our_loss = ours.run(model, x, y, loss_fn, generator, labels=True)
    if not torch.equal(fooled, ~robust):
        return f"differs ({int(fooled.sum())} vs {int((~robust).sum())} fooled)"
    kept = ~fooled
    gap = max((adv[kept] - best[kept]).abs().max().item(), (our_loss[kept] - loss[kept]).abs().max().item()) \
        if kept.any() else 0.0
    return f"identical ({int(kept.sum())} left standing)" if gap <= 1e-5 else f"differs (max gap {gap:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", default="4/255,8/255")
    parser.add_argument("--steps", default="10,100")
    args = parser.parse_args()
    budgets = [vs.parse_eps(e) for e in args.eps.split(",")]
    try:
        from pyautoattack import AutoAttack
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    except ImportError:
        raise SystemExit("the reference is not installed: pip install --no-deps pyautoattack") from None

    print("Linf, 128 test images; robust accuracy % (time); same start: one run of each from the same point")
    print(f"{'model':<10}{'eps':>7}{'steps':>6}  {'attack':<9}{'vlmshield':>18}{'reference':>18}  same start")
    agree = []
    for classes in (4, 10):
        model, x, y = train(classes)
        targets = min(9, classes - 1)
        for eps, steps in ((e, int(s)) for e in budgets for s in args.steps.split(",")):
            reference = {
                "apgd-ce": APGDAttack(model, n_iter=steps, eps=eps, seed=0, device="cpu"),
                "apgd-t": APGDAttack_targeted(model, n_iter=steps, eps=eps, seed=0, device="cpu",
                                              n_target_classes=targets),
            }
            cascade = AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=0, device="cpu",
                                 attacks=["apgd-ce", "apgd-t"])
            cascade.apgd.n_iter, cascade.apgd_targeted.n_iter = steps, steps
            cascade.apgd_targeted.n_target_classes = targets
            for name in ("apgd-ce", "apgd-t", "aa-lite"):
                start = time.perf_counter()
                ours = accuracy(model, vs.attack(name, eps=eps, steps=steps)(model, x, y), y)
                ours_time = time.perf_counter() - start
                start = time.perf_counter()
                if name == "aa-lite":
                    theirs_x = cascade.run_standard_evaluation(x, y, batch_size=len(x))
                    theirs_x = theirs_x[0] if isinstance(theirs_x, tuple) else theirs_x
                else:
                    theirs_x = reference[name].perturb(x, y)
                theirs = accuracy(model, theirs_x, y)
                theirs_time = time.perf_counter() - start
                verdict = "" if name == "aa-lite" else same_start(model, x, y, eps, steps, name)
                agree += [verdict.startswith("identical")] if verdict else []
                print(f"{classes:>2} classes{vs.core.format_eps(eps):>7}{steps:>6}  {name:<9}"
                      f"{100 * ours:>10.2f} ({ours_time:4.1f}s)"
                      f"{100 * theirs:>10.2f} ({theirs_time:4.1f}s)  {verdict}")
        print(f"{classes:>2} classes clean accuracy {100 * accuracy(model, x, y):.2f}")
    print(f"same start: {sum(agree)} of {len(agree)} runs identical to the reference's; "
          + ("the step-size decisions match it, the first checkpoint's included (step 1 compared with zero)."
             if all(agree) else "the step-size decisions do not all match it."))


if __name__ == "__main__":
    main()
