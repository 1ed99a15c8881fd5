"""``vlmshield leaderboard`` (several models under one protocol) and ``vlmshield report`` (combine runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmshield.api import (
    Command,
    defense_params,
    format_run,
    init_from_env,
    is_main_process,
    leaderboard,
    load_run,
    progress_flag,
    resumable,
    write_report,
)


def _leaderboard(args) -> int:
    init_from_env()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = resumable(args.out, lambda: leaderboard(
        models, args.protocol, args.out, dataset=args.dataset, n=args.n, defense=args.defense,
        defense_params=defense_params(args), device=args.device, batch_size=args.batch_size, seed=args.seed,
        weights=not args.no_weights, progress=progress_flag(args), download=args.download))
    if is_main_process():
        print((Path(args.out) / "leaderboard.md").read_text().split("\n## Per dataset")[0].rstrip())
        print(f"\nreport: {Path(args.out) / 'leaderboard.md'}")
        if args.json:
            print(json.dumps(report["leaderboard"], indent=2))
    return 0


def _leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
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
    Command("leaderboard", "run a protocol on several models and write their leaderboard", _leaderboard,
            _leaderboard_arguments),
    Command("report", "combine protocol runs into one table, CSV and plots", _report, _report_arguments),
)

