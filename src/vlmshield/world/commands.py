"""The world's commands: ``vlmshield world pretrain|measure|transfer`` and ``vlmshield demo``.

The pretraining module (open_clip's loss) is imported when ``world pretrain`` runs, not when the command
line starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vlmshield.api import (
    Command,
    UsageError,
    atomic_write_json,
    check_destination,
    environment,
    get_protocol,
    load_model,
    measure_for_card,
    parse_eps,
    progress_flag,
    resolve_device,
    resumable,
    training_progress,
)

from .demo import DEMO_N, DEMO_STEPS, run_demo, summary_table
from .models import ARCHS, read_card
from .transfer import format_matrix, transfer_matrix


def _or_default(out: str | None, default: str) -> str:
    """``--out`` as given (an empty one is refused by the destination check), else the command's default."""
    return default if out is None else out


def _pretrain(args) -> int:
    from .pretrain import export, pretrain, recipe_for

    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                   ("seed", args.seed)) if v is not None}
    out = check_destination(_or_default(args.out, f"runs/world-pretrain-{args.arch}"), folder=True)
    clock = time.perf_counter()
    vlm, losses = resumable(out, lambda: pretrain(args.arch, out, progress=progress_flag(args), device=args.device,
                                                  log=lambda line: print(line, file=sys.stderr), **overrides))
    progress_so_far = training_progress(out) or {}
    seconds = round(progress_so_far.get("elapsed_s") or time.perf_counter() - clock, 1)  # all parts of a resumed run
    recipe = recipe_for(args.arch, **overrides)
    card = export(vlm, recipe, out, train_time_s=seconds, metrics=not args.no_eval,
                  progress=progress_flag(args))
    print(f"trained {args.arch} in {seconds} s; final loss {losses[-1]:.4f}; "
          f"weights {out / card['file']} (sha256 {card['sha256'][:12]}...)")
    if "metrics" in card:
        metrics = card["metrics"]
        print("clean: " + ", ".join(f"{t} {100 * v:.1f}" for t, v in metrics["clean"].items())
              + f"; mean {100 * metrics['clean_mean']:.1f}")
        print("robust mean: " + ", ".join(f"{e} {100 * v:.1f}" for e, v in metrics["robust_mean"].items()))
    return 0


def _measure(args) -> int:
    """Re-measure a shipped model's card under a protocol; the updated card goes to OUT (to copy into the package)."""
    name = f"clip-{args.arch}"
    out = check_destination(_or_default(args.out, f"runs/world-measure-{args.arch}"), folder=True)
    protocol = get_protocol(args.protocol)
    card = read_card(name)
    card["metrics"] = measure_for_card(load_model(name, device=resolve_device(args.device)), protocol.name,
                                       progress=progress_flag(args), out=out / f"eval-{args.protocol}")
    card["metrics_environment"] = environment()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", card)
    metrics = card["metrics"]
    print(f"{name} under {args.protocol}: clean {100 * metrics['clean_mean']:.1f}, robust "
          + ", ".join(f"{e} {100 * v:.1f}" for e, v in metrics["robust_mean"].items())
          + f"; card {out / (name + '.json')}")
    return 0


def _transfer(args) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = check_destination(args.out, folder=False)
    result = transfer_matrix(models, eps=parse_eps(args.eps), steps=args.steps, n=args.n,
                             progress=progress_flag(args))
    print(format_matrix(result))
    if out is not None:
        atomic_write_json(out, result)
    return 0


def _world_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    train = actions.add_parser(
        "pretrain", help="pretrain a tiny CLIP on world-pretrain (the recipe of the shipped weights)")
    train.add_argument("arch", choices=ARCHS)
    train.add_argument("--out", help="output folder (checkpoint, weights, card); default runs/world-pretrain-ARCH")
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="where to train (default cpu, where the shipped weights were trained)")
    train.add_argument("--no-eval", action="store_true", help="skip measuring the card's clean and robust accuracy")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(action_run=_pretrain)
    measure = actions.add_parser(
        "measure", help="re-measure a shipped model's card under a protocol (writes OUT/clip-ARCH.json)")
    measure.add_argument("arch", choices=ARCHS)
    measure.add_argument("--protocol", default="world")
    measure.add_argument("--out", help="output folder (resumable evaluations, the card); default "
                                       "runs/world-measure-ARCH")
    measure.add_argument("--device")
    measure.add_argument("--no-progress", action="store_true")
    measure.set_defaults(action_run=_measure)
    transfer = actions.add_parser(
        "transfer", help="accuracy of each model on adversarial examples crafted on the others")
    transfer.add_argument("--models", default=",".join(f"clip-{a}" for a in ARCHS))
    transfer.add_argument("--eps", default="4/255")
    transfer.add_argument("--steps", type=int, default=50)
    transfer.add_argument("--n", type=int, default=500, help="images per task")
    transfer.add_argument("--out", help="write the result as JSON")
    transfer.add_argument("--no-progress", action="store_true")
    transfer.set_defaults(action_run=_transfer)


def _demo(args) -> int:
    models = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if models == []:
        raise UsageError("--models names no model; give zoo names separated by commas, or leave it out for every "
                         "world model.")
    summary = run_demo(check_destination(args.out, folder=True), models=models, n=args.n, steps=args.steps,
                       progress=progress_flag(args))
    print(summary_table(summary))
    print(f"report: {Path(args.out) / 'report.md'} ({summary['wall_time_s']} s)")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="output folder for the report, plot and records")
    parser.add_argument("--models", help="comma-separated zoo names (default: every world model)")
    parser.add_argument("--n", type=int, default=DEMO_N, help="images per task")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="apgd-ce iterations")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def _world(args) -> int:
    return args.action_run(args)


COMMANDS = (
    Command("world", "the embedded world: pretrain its tiny CLIPs, re-measure their cards, measure transfer "
            "between them", _world,
            _world_arguments),
    Command("demo", "evaluate the world's models, clean and under attack, and write a report", _demo,
            _demo_arguments),
)
