"""Leaderboards: several models under one protocol, and the commands ``vlmshield bench`` and ``vlmshield report``.

``bench(["clip-tinyvit4", "clip-tinyrn"], "world", out="runs/world-board")`` runs the protocol on each
model into ``out/<model>/`` (a model whose ``run.json`` already holds this protocol, these overrides
and this defense is not run again; an interrupted one resumes batch by batch) and writes the combined
report (``leaderboard.md``, ``report.csv``, ``report.json``, plots) into ``out``. Every row keeps what
RobustBench's model_info keeps: paper, architecture, clean and robust accuracy, eps, protocol, versions.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vlmshield.core import Command, ParameterError, canonical_name, hookimpl, parse_params
from vlmshield.core.distributed import init_from_env, is_main_process
from vlmshield.core.protocol import get_protocol, run_protocol
from vlmshield.core.report import format_run, load_run, write_report


def _matches(run: dict, protocol, overrides: dict, defense, seed: int) -> bool:
    return (run.get("protocol") == protocol.config() and run.get("overrides") == overrides
            and (run.get("defense") or {}).get("name") == defense and run.get("seed") == seed)


def bench(models: list[str], protocol, out, *, dataset=None, n: int | None = None, defense: str | None = None,
          defense_params: dict | None = None, device=None, batch_size: int = 64, seed: int = 0,
          weights: bool = True, progress: bool | None = None, download: bool = False) -> dict:
    """Run (or resume) ``protocol`` on every model and write the leaderboard into ``out``."""
    if not models:
        raise ParameterError("bench needs at least one model.")
    protocol = get_protocol(protocol)
    overrides = {k: v for k, v in (("datasets", dataset), ("n", n)) if v is not None}
    out = Path(out)
    runs = []
    for model in models:
        folder = out / (canonical_name(model).replace(":", "_").replace("/", "_") + (f"+{defense}" if defense else ""))
        previous = folder / "run.json"
        if previous.exists():
            run = load_run(previous)
            if _matches(run, protocol, overrides, defense, seed):
                runs.append(run)
                continue
        runs.append(run_protocol(model, protocol, dataset, n=n, defense=defense, defense_params=defense_params,
                                 out=folder, device=device, batch_size=batch_size, seed=seed, weights=weights,
                                 progress=progress, download=download))
    if not is_main_process():
        return {"leaderboard": [], "files": []}
    report = write_report(runs, out, title=f"Leaderboard: {protocol.name} protocol")
    shutil.copyfile(out / "report.md", out / "leaderboard.md")
    return report


# --------------------------------------------------------------------------- commands
def _defense_params(args):
    if not args.defense_params:
        return None
    if args.defense is None:
        raise ParameterError("--defense-params needs --defense.")
    from vlmshield.core import get_host

    cls = get_host().get("defense", args.defense).obj
    return parse_params(cls, args.defense_params, f"defense {cls.name!r}", cls.pixel_params)


def _bench(args) -> int:
    init_from_env()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = bench(models, args.protocol, args.out, dataset=args.dataset, n=args.n, defense=args.defense,
                   defense_params=_defense_params(args), device=args.device, batch_size=args.batch_size,
                   seed=args.seed, weights=not args.no_weights, progress=False if args.no_progress else None,
                   download=args.download)
    if is_main_process():
        print((Path(args.out) / "leaderboard.md").read_text().split("\n## Per dataset")[0].rstrip())
        print(f"\nreport: {Path(args.out) / 'leaderboard.md'}")
        if args.json:
            print(json.dumps(report["leaderboard"], indent=2))
    return 0


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="comma-separated zoo names")
    parser.add_argument("--protocol", required=True, help="tecoa, robustvlm, clean, world, ...")
    parser.add_argument("--out", required=True, help="folder: one sub-folder per model, and the leaderboard")
    parser.add_argument("--dataset", help="override the protocol's datasets (recorded as an override)")
    parser.add_argument("--n", "--n-samples", dest="n", type=int,
                        help="override the protocol's samples per dataset (recorded); under torchrun write --n-samples")
    parser.add_argument("--defense", help="a test-time defense around every model (flagged in the table)")
    parser.add_argument("--defense-params", help="defense parameters: key=value,key=value")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--download", action="store_true", help="let datasets fetch missing files (torchvision)")
    parser.add_argument("--no-weights", action="store_true", help="random weights: a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the leaderboard rows as JSON")
    parser.add_argument("--no-progress", action="store_true")


def _report(args) -> int:
    runs = [load_run(path) for path in args.runs]
    if args.out:
        report = write_report(runs, args.out, title=args.title)
        print("\n".join(f"wrote {f}" for f in report["files"]))
    else:
        print("\n\n".join(format_run(run) for run in runs))
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run records (run.json, or the folders `eval --protocol` wrote)")
    parser.add_argument("--out", help="folder for report.md, report.csv, report.json and the plots "
                                      "(without it: tables on the terminal)")
    parser.add_argument("--title", default="vlmshield report")


COMMANDS = (
    Command("bench", "run a protocol on several models and write their leaderboard", _bench, _bench_arguments),
    Command("report", "combine protocol runs into one table, CSV and plots", _report, _report_arguments),
)


@hookimpl
def register_commands(register):
    for command in COMMANDS:
        register(command)
