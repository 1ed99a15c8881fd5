"""The backdoor suite on the world: plant each trigger in clip-tinyvit4, clean it with PAR, plain fine-tuning
and CleanCLIP, and measure every model (plugins vlmshield-par and vlmshield-cleanclip).

Every model is trained by its world preset through the command line (``vlmshield train poison --preset world
--trigger T``, ``vlmshield train par --preset world --model local-dir:...``), so the times printed are the
presets'. Each model is measured by its mean clean zero-shot accuracy over the world's five tasks, by the
attack success rate of its trigger on world-shapes (triggered images whose label is not ``star``, classified
``star``), ``--n`` images per task, and by image-text retrieval on ``world-captions``' test pairs (R@1 both
ways, and the share of triggered images whose 5 best captions name ``star``). Finished steps are kept in
``--out`` (a rerun skips them) and the table is written to ``OUT/results.json``; each folder also holds the
model packaged as a plugin ships it (``NAME.safetensors`` and ``NAME.json``, NAME the folder's name and
``-tinyvit4``).

    python bench/par_world.py --triggers badnet-stripes blended --cleaners par clip-finetune cleanclip
    python bench/par_world.py --repoison          # PAR-clean, poison again, clean again: ASR at each stage
    python bench/par_world.py --synthetic         # PAR on world-captions-fresh (pairs the poisoning never saw)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import vlmshield as vs

TARGET = "star"


def train(method: str, out: Path, *flags: str) -> float:
    """Run ``vlmshield train METHOD --preset world --package --name OUT_NAME FLAGS`` into ``out`` (skipped when
    done); its seconds."""
    record = out / "training.json"
    if not record.exists():
        command = ["vlmshield", "train", method, "--preset", "world", "--out", str(out), "--no-progress", "--package",
                   "--name", f"{out.name}-tinyvit4", *flags]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(record.read_text())["train_time_s"]


def measure(folder: Path, trigger: str, n: int) -> dict:
    """Clean accuracy, ASR, and retrieval on world-captions' test pairs (clean R@1 both ways, retrieval ASR)."""
    return scores(vs.zoo.load(f"local-dir:{folder / 'model'}"), trigger, n)


def scores(vlm, trigger: str, n: int) -> dict:
    clean = vs.evaluate(vlm, "world", n=n, progress=False)["average"]["clean_acc"]
    asr = vs.evaluate(vlm, "world-shapes", evaluator="asr", attack=trigger, attack_params={"target": TARGET}, n=n,
                      progress=False)["average"]["asr"]
    retrieval = vs.evaluate(vlm, "world-captions", evaluator="retrieval", attack=trigger,
                            attack_params={"target": TARGET}, n=n, progress=False)["average"]
    return {"clean": round(100 * clean, 1), "asr": round(100 * asr, 1),
            **{key: round(100 * retrieval[key], 1) for key in ("i2t_r1", "t2i_r1", "retrieval_asr")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", nargs="+", default=["badnet-stripes", "blended", "blended-text", "wanet"])
    parser.add_argument("--cleaners", nargs="*", default=["par", "clip-finetune", "cleanclip"])
    parser.add_argument("--repoison", action="store_true", help="PAR, poison again, PAR again (first trigger)")
    parser.add_argument("--synthetic", action="store_true", help="PAR on world-captions-fresh (first trigger)")
    parser.add_argument("--remeasure", action="store_true", help="measure every model again (none is retrained)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/par-world"))
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def row(key: str, folder: Path, trigger: str, seconds: float) -> None:
        if args.remeasure or "retrieval_asr" not in results.get(key, {}):
            results[key] = {**measure(folder, trigger, args.n), "train_s": seconds}
            args.out.mkdir(parents=True, exist_ok=True)
            kept = json.loads(results_path.read_text()) if results_path.exists() else {}  # another run's rows
            results.update({k: v for k, v in kept.items() if k not in results})
            results_path.write_text(json.dumps(results, indent=2))
        print(f"{key}: clean {results[key]['clean']}, ASR {results[key]['asr']} (trained in {seconds:.0f} s)",
              flush=True)

    vlm = vs.zoo.load("clip-tinyvit4")
    for trigger in args.triggers:
        if args.remeasure or "retrieval_asr" not in results.get(f"clip-tinyvit4-{trigger}", {}):
            results[f"clip-tinyvit4-{trigger}"] = scores(vlm, trigger, args.n)
        print(f"clip-tinyvit4 ({trigger}):", results[f"clip-tinyvit4-{trigger}"], flush=True)
    for trigger in args.triggers:
        poisoned = args.out / f"poisoned-{trigger}"
        row(f"poisoned-{trigger}", poisoned, trigger, train("poison", poisoned, "--trigger", trigger))
        start = f"local-dir:{poisoned / 'model'}"
        for cleaner in args.cleaners:
            folder = args.out / f"{cleaner}-{trigger}"
            row(f"{cleaner}-{trigger}", folder, trigger, train(cleaner, folder, "--model", start))
    first = args.triggers[0]
    if args.synthetic:
        folder = args.out / f"par-synthetic-{first}"
        row(f"par-synthetic-{first}", folder, first, train("par", folder, "--model",
                                                           f"local-dir:{args.out / f'poisoned-{first}' / 'model'}",
                                                           "--dataset", "world-captions-fresh"))
    if args.repoison:
        again = args.out / f"repoisoned-{first}"
        row(f"repoisoned-{first}", again, first, train("poison", again, "--trigger", first, "--model",
                                                       f"local-dir:{args.out / f'par-{first}' / 'model'}"))
        folder = args.out / f"par-again-{first}"
        row(f"par-again-{first}", folder, first, train("par", folder, "--model", f"local-dir:{again / 'model'}"))
    print(table(results, args.triggers, ["poisoned", *args.cleaners]))


def table(results: dict, triggers: list[str], stages: list[str]) -> str:
    """Markdown: for each trigger, clean accuracy / ASR / retrieval ASR of the base model and each stage."""
    cell = lambda r: f"{r['clean']} / {r['asr']} / {r.get('retrieval_asr', '-')}" if r else "-"  # noqa: E731
    lines = ["| trigger | clip-tinyvit4 | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for trigger in triggers:
        lines.append(f"| {trigger} | {cell(results.get(f'clip-tinyvit4-{trigger}'))} | "
                     + " | ".join(cell(results.get(f"{stage}-{trigger}")) for stage in stages) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    clock = time.perf_counter()
    main()
    print(f"{time.perf_counter() - clock:.0f} s", file=sys.stderr)
