"""Reproduce a zoo entry's published numbers: evaluate it under its card's protocol, then compare.

    python bench/reproduce.py NAME [NAME ...] [--n N] [--datasets A,B] [--data-root DIR] [--out DIR] [--device cuda]

For each model, the card's published numbers are read and put in percent (``published``): a zoo card's
``metrics`` hold means in percent; a model shipped as package files also has the JSON card beside its
weights, whose ``metrics`` hold fractions per dataset and on average. The registered protocol they were
measured with is found from the card's protocol name or text (``protocol_of``), ``run_protocol`` runs it,
and a table lists every published number beside the measured one and the difference in percentage
points (of the numbers as printed). ``--n`` and ``--datasets`` are overrides: printed as such, with what
they do to the comparison. A card without published numbers or whose protocol is not registered, missing
weights and missing data end in one sentence on stderr and exit status 2.

On the world (offline, CPU): ``python bench/reproduce.py clip-tinyvit4 --n 50``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import vlmshield as vs
from vlmshield.api import get_protocol, run_protocol
from vlmshield.core import DATA_ENV, ParameterError, VlmshieldError
from vlmshield.engine.sanity import format_flag
from vlmshield.world.models import WEIGHTS_DIR as WORLD_WEIGHTS

#: Cards that cite a paper's table rather than name a protocol: RobustVLM's README numbers come from its
#: own evaluation (APGD-CE + APGD-T, 1,000 images per dataset), which the ``robustvlm`` protocol runs.
CITED = {"RobustVLM README": "robustvlm"}


def shipped_metrics(card) -> dict:
    """The ``metrics`` of the JSON card beside a packaged model's weights (the world's own models, or a
    plugin's, whose loader knows their folder); empty for any other card."""
    if card.source != "package":
        return {}
    path = Path(getattr(card.loader, "keywords", {}).get("directory", WORLD_WEIGHTS)) / f"{card.name}.json"
    return json.loads(path.read_text()).get("metrics", {}) if path.is_file() else {}


def published(metrics: dict) -> dict[tuple[str, str], float]:
    """Published numbers in percent, keyed (``"clean"`` or an eps, ``"mean"`` or a dataset), from either format:
    a zoo card's ``metrics`` (percent, means: ``{"clean": 61.1, "robust": {"2/255": 45.9}}``) or a shipped JSON
    card's (fractions: ``clean_mean`` and ``robust_mean``, and per dataset ``clean`` and ``robust``)."""
    if "clean_mean" in metrics:
        scale, clean = 100, {"mean": metrics["clean_mean"], **metrics.get("clean", {})}
        robust = {eps: {"mean": mean, **metrics.get("robust", {}).get(eps, {})}
                  for eps, mean in metrics.get("robust_mean", {}).items()}
    else:
        scale, clean = 1, {"mean": metrics.get("clean")}
        robust = {eps: {"mean": value} for eps, value in metrics.get("robust", {}).items()}
    return {(what, where): scale * value for what, values in {"clean": clean, **robust}.items()
            for where, value in values.items() if value is not None}


def protocol_of(name: str, metrics: dict, shipped: dict) -> str:
    """The registered protocol a card's numbers were measured with: the name its shipped JSON card gives, or
    the one its protocol text begins with ("world: ..."), or the one of the paper table it cites."""
    text = shipped.get("protocol", {}).get("name") or metrics.get("protocol", "")
    head = text.split(":")[0].strip()
    protocol = next((p for source, p in CITED.items() if head.startswith(source)), head)
    registered = vs.get_host().registries["protocol"]
    if protocol not in registered:
        raise ParameterError(f"{name}'s numbers were measured under {text or 'an unnamed protocol'!r}, which is not "
                             f"a registered protocol ({', '.join(registered.names())}), so there is nothing to rerun "
                             f"them with.")
    return protocol


def notes(run: dict, shipped: dict, numbers: dict) -> list[str]:
    """What makes the measured numbers differ from the published ones other than the model: overrides, eps the
    protocol does not run, and a card measured under settings the registered protocol no longer has."""
    lines, protocol, overrides = [], run["protocol"], run["overrides"]
    if overrides:
        lines.append("overrides: " + ", ".join(f"{k}={v} (the protocol's: {protocol.get(k) or 'all'})"
                                               for k, v in overrides.items()) + "; the numbers measured are not the "
                     "protocol's.")
    if "n" in overrides:
        lines.append(f"With n={run['n']} images per dataset one accuracy has a standard error of up to "
                     f"{50 / math.sqrt(run['n']):.1f} points: differences of that size are expected.")
    if "datasets" in overrides:
        lines.append("The means are not measured: the run covers other datasets than the published means.")
    unrun = [eps for eps in dict.fromkeys(what for what, _ in numbers) if eps not in ("clean", *protocol["eps"])]
    if unrun:
        lines.append(f"The {protocol['name']} protocol does not run {', '.join(unrun)}: those numbers are not "
                     f"measured.")
    card = shipped.get("protocol", {})
    changed = [f"{k} {card[k]} (now {v})" for k, v in protocol.items()
               if k not in ("name", "description", "papers") and k in card and card[k] != v]
    if changed:
        lines.append(f"The card was measured with {', '.join(changed)}: its numbers are not the registered "
                     f"{protocol['name']} protocol's.")
    return lines


def measured(run: dict, what: str, where: str) -> float | None:
    """The run's accuracy in percent for (``"clean"`` or an eps, ``"mean"`` or a dataset); None if not measured."""
    if where == "mean" and "datasets" in run["overrides"]:
        return None
    result = run["average"] if where == "mean" else run["results"].get(where)
    value = None if result is None else result["clean_acc"] if what == "clean" else result["robust_acc"].get(what)
    return None if value is None else 100 * value


def cell(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.1f}"


def reproduce(name: str, args) -> None:
    """Evaluate ``name`` under its card's protocol and print published, measured and their difference."""
    registration = vs.get_host().get("model", name)
    card, shipped = registration.obj, shipped_metrics(registration.obj)
    numbers = published(shipped or card.metrics)
    if not numbers:
        raise ParameterError(f"{card.name} has no published numbers to reproduce (its card's metrics are empty).")
    protocol = get_protocol(protocol_of(card.name, card.metrics, shipped))
    run = run_protocol(card.name, protocol, args.datasets, n=args.n, device=args.device,
                       out=None if args.out is None else Path(args.out) / card.name)
    print(f"{card.name} (card from {registration.provider}) under the {protocol.name} protocol: {protocol.description}")
    for line in notes(run, shipped, numbers):
        print(line)
    print("\n| number | published | measured | difference |\n|---|---|---|---|")
    for (what, where), value in numbers.items():
        if where != "mean" and where not in run["results"]:
            continue  # a dataset the --datasets override left out
        mine = measured(run, what, where)
        diff = None if mine is None else round(mine, 1) - round(value, 1)
        label = "clean" if what == "clean" else f"robust {what}"
        print(f"| {label}, {where} | {cell(value)} | {cell(mine)} | {cell(diff, '+')} |")
    for flag in run["flags"]:
        print(format_flag(flag))
    if args.out is not None:
        print(f"record: {Path(args.out) / card.name / 'run.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="zoo entries (`vlmshield list models`)")
    parser.add_argument("--n", type=int, help="images per dataset instead of the protocol's (an override)")
    parser.add_argument("--datasets", metavar="A,B", help="datasets instead of the protocol's (an override); "
                                                          "NAME:/root gives a dataset's folder")
    parser.add_argument("--data-root", help=f"folder holding each dataset as DIR/<name> (sets {DATA_ENV})")
    parser.add_argument("--out", help="write each model's run into OUT/NAME (run.json; resumable)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: the library's choice)")
    args = parser.parse_args(argv)
    if args.data_root:
        os.environ[DATA_ENV] = args.data_root
    status = 0
    for name in args.names:
        try:
            reproduce(name, args)
        except VlmshieldError as error:
            print(f"reproduce: error: {name}: {error}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
