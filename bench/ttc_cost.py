"""What does TTC cost per image, relative to plain inference, and what does its gate save?

Setting: a world model (``--model``, default clip-tinyvit4) on a batch of ``--batch`` images of a world
task, clean and PGD-10 adversarial (1/255, the paper's attack), on the CPU (or ``--device``). Timings,
each the median of ``--repeats`` runs after a warm-up, in ms per image:

- plain: the zero-shot classifier alone;
- ttc: vlmshield's TTC at the paper's defaults (tau_thres 0.2): the tau check (two encoder passes) on
  every image, the counterattack on the gated ones only;
- ttc-auto: the same with ``tau_thres="auto"`` (the threshold calibrated on clean images of the task);
- reference: the reference code's behaviour on the same inputs and settings: the counterattack runs on
  every image and the gate only picks, through the step weights, which result each image keeps.

It prints the share of images each variant counterattacked, and the ratios to plain inference and to the reference.

    python bench/ttc_cost.py [--model clip-tinyvit4] [--task world-shapes] [--batch 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from vlmshield_ttc.ttc import TTC, step_weights

import vlmshield as vs


def reference_purify(defended, x: torch.Tensor) -> torch.Tensor:
    """TTC as the reference code runs it: every image counterattacked, tau from the first step's pass."""
    x, encoder, eps, alpha = x.detach(), defended.encoder, defended.eps, defended.alpha
    delta = defended.noise(x)
    with torch.no_grad():
        anchor = encoder(x)
    iterates, tau = [delta], None
    with torch.enable_grad():
        for _ in range(defended.steps):
            delta = delta.detach().requires_grad_(True)
            moved = encoder(x + delta)
            if tau is None:
                tau = (moved - anchor).detach().norm(dim=1) / anchor.norm(dim=1)
            (grad,) = torch.autograd.grad((moved - anchor).pow(2).sum(), delta)
            delta = (x + (delta + alpha * grad.sign()).clamp(-eps, eps)).clamp(0, 1) - x
            iterates.append(delta.detach())
    gated = (tau < defended.threshold).to(x.dtype).view(-1, 1, 1, 1)
    weights = step_weights(defended.steps, defended.beta).to(x.dtype)
    counterattacked = sum(w * d for w, d in zip(weights, iterates, strict=True))
    return x + gated * counterattacked + (1 - gated) * iterates[0]


def timed(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clip-tinyvit4")
    parser.add_argument("--task", default="world-shapes")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    vlm = vs.zoo.load(args.model, device=args.device)
    data = vs.dataset(args.task, image_size=vlm.image_size[0])
    x = torch.stack([data[i][0] for i in range(args.batch)]).to(args.device)
    y = torch.tensor([data[i][1] for i in range(args.batch)], device=args.device)
    calibration = torch.stack([data[i][0] for i in range(args.batch, args.batch + 256)]).to(args.device)
    classifier = vlm.zero_shot(data.classnames, data.templates)
    x_adv = vs.attack("pgd", eps="1/255", alpha="1/255", steps=10)(classifier, x, y)
    defenses = {"ttc": TTC().wrap(classifier), "ttc-auto": TTC(tau_thres="auto").wrap(classifier, calibration)}
    print(f"{args.model} on {args.task}, batch {args.batch}, {args.device}, {torch.get_num_threads()} threads; "
          f"thresholds: 0.2 and auto {defenses['ttc-auto'].threshold:.3f}")
    print(f"{'inputs':<12}{'plain ms/img':>14}{'variant':>10}{'ms/img':>9}{'attacked':>10}{'x plain':>9}"
          f"{'x reference':>13}")
    for label, inputs in (("clean", x), ("adversarial", x_adv)):
        with torch.no_grad():
            plain = timed(lambda x=inputs: classifier(x), args.repeats) / len(inputs)
            reference = timed(lambda x=inputs: classifier(reference_purify(defenses["ttc"], x)), args.repeats)
            reference /= len(inputs)
            rows = [("reference", reference, 1.0)]
            for name, defended in defenses.items():
                cost = timed(lambda d=defended, x=inputs: d(x), args.repeats) / len(inputs)
                rows.append((name, cost, float(defended.last_gated.float().mean())))
        for name, cost, gated in rows:
            print(f"{label:<12}{1000 * plain:>14.3f}{name:>10}{1000 * cost:>9.3f}{100 * gated:>9.0f}%"
                  f"{cost / plain:>9.2f}{cost / reference:>13.2f}")


if __name__ == "__main__":
    main()
