"""Clean accuracy against attack success rate on the world, as PAR's README plots it: PAR over tau, CleanCLIP
over its in-modal weight, plain fine-tuning over its learning rate, all from the same poisoned model.

Run ``bench/par_world.py`` first (it trains the poisoned model and each cleaner at its preset's settings, the
points this script reuses); each further point is a world-preset run with one setting changed. Writes
``OUT/tradeoff.json`` and ``OUT/tradeoff.png``.

    python bench/par_tradeoff.py --trigger badnet-stripes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from par_world import measure, train

#: (method, what is swept, its values besides the preset's, how the value is given to `vlmshield train`).
SWEEPS = (
    ("par", "tau", (1.0, 3.0), lambda v: ["--method-params", f"tau={v}"]),
    ("cleanclip", "inmodal_weight", (4.0, 16.0), lambda v: ["--method-params", f"inmodal_weight={v}"]),
    ("clip-finetune", "lr x", (0.3, 3.0), lambda v: ["--lr", f"perturb={3e-5 * v},recover={3e-5 * v}"]),
)
PRESET_VALUE = {"par": 2.15, "cleanclip": 1.0, "clip-finetune": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trigger", default="badnet-stripes")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/par-world"))
    args = parser.parse_args()
    results = json.loads((args.out / "results.json").read_text())
    poisoned = args.out / f"poisoned-{args.trigger}"
    curves = {"poisoned": [results[f"poisoned-{args.trigger}"]]}
    for method, swept, values, flags in SWEEPS:
        points = [{**results[f"{method}-{args.trigger}"], swept: PRESET_VALUE[method]}]
        for value in values:
            folder = args.out / "tradeoff" / f"{method}-{swept.split()[0]}{value:g}-{args.trigger}"
            seconds = train(method, folder, "--model", f"local-dir:{poisoned / 'model'}", *flags(value))
            points.append({**measure(folder, args.trigger, args.n), swept: value, "train_s": seconds})
            print(method, swept, value, points[-1], flush=True)
        curves[method] = sorted(points, key=lambda p: p[swept])
    (args.out / "tradeoff.json").write_text(json.dumps(curves, indent=2))
    plot(curves, args.trigger, args.out / "tradeoff.png")
    print(json.dumps(curves, indent=2))


def plot(curves: dict, trigger: str, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    start = curves["poisoned"][0]
    axes.scatter([start["clean"]], [start["asr"]], color="black", marker="x", label="poisoned", zorder=3)
    for method, points in curves.items():
        if method == "poisoned":
            continue
        line = axes.plot([p["clean"] for p in points], [p["asr"] for p in points], marker="o", label=method)[0]
        swept = next(k for k in points[0] if k not in ("clean", "asr", "train_s"))
        for point in points:
            axes.annotate(f"{point[swept]:g}", (point["clean"], point["asr"]), fontsize=7, color=line.get_color(),
                          xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("clean zero-shot accuracy, mean over the world's tasks (%)")
    axes.set_ylabel(f"attack success rate, {trigger} (%)")
    axes.set_title(f"Backdoor removal on the world: clip-tinyvit4 poisoned with {trigger}")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()
