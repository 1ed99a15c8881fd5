"""Clean accuracy against attack success rate on the world over the learning rate, as PAR's README plots it for
PAR, CleanCLIP and plain fine-tuning, all cleaning the same poisoned model.

Run ``bench/par_world.py`` first: it trains the poisoned model and each cleaner at its world preset (the
preset's point of each curve, reused here). Every other point is the world preset with its peak learning rate
changed (PAR and fine-tuning: from the peak down to a tenth over the first half, then a cosine to a
ten-thousandth, as the preset; CleanCLIP: warm-up to the peak, then a cosine), trained into
``OUT/tradeoff/METHOD-lrPEAK-TRIGGER`` unless it is there. Writes ``OUT/tradeoff.json`` and ``OUT/tradeoff.png``.

    python bench/par_tradeoff.py --trigger badnet-stripes
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from par_world import measure

from vlmshield.cli.train import plan, train_run

#: Peak learning rates of each curve; the first is the world preset's (``bench/par_world.py`` trains it).
SWEEPS = {"par": (6e-5, 3e-5, 1e-4), "clip-finetune": (6e-5, 3e-4), "cleanclip": (1e-4, 3e-4)}


def at_peak(run: dict, peak: float) -> dict:
    """``run`` (from ``plan``) with its schedule scaled to the peak learning rate ``peak``."""
    stages = run["config"].stages
    if len(stages) == 2:  # PAR's: linear from the peak to a tenth, then a cosine to a ten-thousandth
        stages = (replace(stages[0], lr_start=peak, lr=peak / 10),
                  replace(stages[1], lr=peak / 10, lr_end=peak / 10_000))
    else:
        stages = tuple(replace(stage, lr=peak) for stage in stages)
    return {**run, "config": replace(run["config"], stages=stages)}


def point(method: str, peak: float, trigger: str, out: Path, n: int) -> dict:
    poisoned = f"local-dir:{out / f'poisoned-{trigger}' / 'model'}"
    if peak == SWEEPS[method][0]:
        folder = out / f"{method}-{trigger}"
    else:
        folder = out / "tradeoff" / f"{method}-lr{peak:g}-{trigger}"
        if not (folder / "training.json").exists():
            clock = time.perf_counter()
            train_run(at_peak(plan(method, "world", model=poisoned), peak), folder, progress=False)
            print(f"{method} at lr {peak:g}: trained in {time.perf_counter() - clock:.0f} s", flush=True)
    return {"lr": peak, **measure(folder, trigger, n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", default="badnet-stripes")
    parser.add_argument("--methods", nargs="+", default=list(SWEEPS))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/par-world"))
    args = parser.parse_args()
    curves = {"poisoned": [measure(args.out / f"poisoned-{args.trigger}", args.trigger, args.n)]}
    for method in args.methods:
        curves[method] = sorted((point(method, peak, args.trigger, args.out, args.n) for peak in SWEEPS[method]),
                                key=lambda p: p["lr"])
        print(method, curves[method], flush=True)
    (args.out / "tradeoff.json").write_text(json.dumps(curves, indent=2))
    plot(curves, args.trigger, args.out / "tradeoff.png")


def plot(curves: dict, trigger: str, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5), dpi=100)
    axes = figure.subplots()
    start = curves["poisoned"][0]
    axes.scatter([start["clean"]], [start["asr"]], color="black", marker="x", label="poisoned", zorder=3)
    for method, points in curves.items():
        if method == "poisoned":
            continue
        line = axes.plot([p["clean"] for p in points], [p["asr"] for p in points], marker="o", label=method)[0]
        for p in points:
            axes.annotate(f"{p['lr']:g}", (p["clean"], p["asr"]), fontsize=7, color=line.get_color(),
                          xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("clean zero-shot accuracy, mean over the world's tasks (%)")
    axes.set_ylabel(f"attack success rate of {trigger} (%)")
    axes.set_title("Backdoor removal on the world over the peak learning rate", fontsize=10)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()
