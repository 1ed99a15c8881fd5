"""Reports of protocol runs: one or several models' ``run.json`` as a table, a CSV, plots and a leaderboard.

Every table takes its columns from the run records (``columns``): a metric measured once (``clean_acc``)
is one column, a metric measured per setting (``robust_acc`` by eps, ``asr`` by trigger, a domain pair's
``target:robust_acc``, a test-time defense's ``adaptive_robust_acc`` and ``robust_acc:NAME``) one column
per setting. ``write_report(runs, out)`` writes into the folder ``out``:

- ``report.json``: the leaderboard rows and every run record, as read;
- ``report.csv``: one row per model and dataset (and the average), one column per metric
  (``clean_acc``) and per metric and setting (``robust_acc@4/255``, ``adaptive_robust_acc@4/255``,
  ``asr@badnet``);
- ``report.md``: the leaderboard (the mean over datasets of each metric per model, best first by the
  run's ``rank_by``, with paper, architecture, protocol and flags), then each column per dataset and
  model, and the datasets an evaluator skipped;
- ``robust_vs_eps.png`` (a sweep of eps: the ranking metric against eps, eps 0 being its clean
  counterpart) or ``METRIC_by_trigger.png`` (a sweep of triggers), one line per model;
- ``per_dataset.png``: per dataset, one bar per model: the clean metric (light) with the ranking metric
  at the last setting (the largest eps) over it.

A leaderboard ranks on the run's ``rank_by`` column (highest robust accuracy by default; lowest attack
success rate for ``asr``; a domain pair's target robust accuracy), comparing settings from the last (the
largest eps) back to the first, then the clean metrics. A model defended at test time (TTC) is marked in
every table: its number under a non-adaptive attack is an upper bound, so its leaderboard cell shows the
adaptive number beside it (``35.0 / adaptive 2.0``) and the row is ranked by the adaptive one; a run
without adaptive numbers says so. Each row keeps the run's counting convention (robust accuracy over
the clean-correct images or over all images) and the report warns when runs that count differently
share a table. Records written before ``rank_by`` and ``skipped`` existed read as ranked by robust
accuracy, nothing skipped.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from ..core import DataError, ParameterError, parse_eps
from .evaluation import PARTS, format_skipped, unprefixed
from .records import atomic_write_json
from .sanity import format_flag


def load_run(path: str | os.PathLike) -> dict:
    """The run record in ``path`` (a ``run.json`` or the folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read a run record from {path} ({type(error).__name__}).") from None
    if not isinstance(record, dict) or record.get("record") != "protocol-run":
        raise DataError(f"{path} is not the record of a protocol run (`vlmshield eval --protocol ... --out DIR` "
                        f"writes DIR/run.json).")
    return record


def label(run: dict) -> str:
    """How a run is named in tables: the model, and the test-time defense around it."""
    name = run["model"]["name"]
    return f"{name} + {run['defense']['name']}" if run.get("defense") else name


def counting(run: dict) -> str:
    """The run's counting convention (records written before conventions existed counted clean-correct)."""
    return run.get("counting") or run["protocol"].get("counting") or "clean-correct"


def describe_preprocess(rule) -> str:
    """A preprocessing rule in words: ``native`` or ``resize 256, crop 224 (bilinear)``."""
    if isinstance(rule, dict):
        return f"resize {rule['resize']}, crop {rule['crop']} ({rule['interpolation']})"
    return str(rule)


def _how(run: dict, cols: tuple) -> str:
    """The run's evaluator (when not zero-shot), counting (when it measures robust accuracy) and
    preprocessing in one line."""
    rules: dict[str, list[str]] = {}
    for name, rule in (run.get("preprocess") or {}).items():
        rules.setdefault(describe_preprocess(rule), []).append(name)
    shown = "; ".join(text if len(rules) == 1 else f"{text}: {', '.join(names)}" for text, names in rules.items())
    over = "all images" if counting(run) == "all" else "the clean-correct images"
    parts = [f"evaluator {run['protocol']['evaluator']}" if "evaluator" in run["protocol"] else "",
             f"robust accuracy over {over}" if any(unprefixed(m) == "robust_acc" for m in cols[1]) else "",
             f"preprocessing: {shown}" if shown else ""]
    return "; ".join(filter(None, parts))


#: How tables title metrics ("clean_acc" -> "clean", "target:robust_acc" -> "target robust").
TITLES = {"clean_acc": "clean", "robust_acc": "robust", "adaptive_robust_acc": "adaptive"}


def title(metric: str) -> str:
    """A metric as a table titles it."""
    return " ".join(TITLES.get(word, word) for word in metric.split(":"))


def _unit(metric: str) -> str:
    """" accuracy" for an accuracy column, "" for another (``asr``)."""
    return " accuracy" if unprefixed(metric).partition(":")[0].endswith("_acc") else ""


def _is_eps(setting: str) -> bool:
    try:
        parse_eps(setting)
    except ParameterError:
        return False
    return True


def _ordered(settings) -> list[str]:
    """Settings, each once: by budget when they are all eps labels, else in the order first seen."""
    unique = list(dict.fromkeys(settings))
    return sorted(unique, key=parse_eps) if all(map(_is_eps, unique)) else unique


def columns(*runs: dict) -> tuple[list[str], list[str], list[str]]:
    """(metrics measured once, metrics measured per setting, their settings) of run records, as their
    averages hold them: a per-setting metric is a {setting: value} dict."""
    averages = [run["average"] for run in runs]
    once = list(dict.fromkeys(m for a in averages for m, v in a.items() if not isinstance(v, dict)))
    swept = list(dict.fromkeys(m for a in averages for m, v in a.items() if isinstance(v, dict)))
    return once, swept, _ordered(s for a in averages for m in swept for s in a.get(m, {}))


def is_adaptive(metric: str) -> bool:
    """Whether ``metric`` is a test-time defense's adaptive number (``adaptive_robust_acc``, ``robust_acc:NAME``)."""
    base = unprefixed(metric)
    return base == "adaptive_robust_acc" or base.startswith("robust_acc:")


def adaptive_of(metric: str) -> str:
    """The adaptive counterpart of a robust accuracy column (``target:robust_acc`` ->
    ``target:adaptive_robust_acc``); "" for any other column."""
    return metric.removesuffix("robust_acc") + "adaptive_robust_acc" if unprefixed(metric) == "robust_acc" else ""


def clean_of(metric: str, once: list[str]) -> str | None:
    """The clean column that goes with ``metric`` (``target:robust_acc`` -> ``target:clean_acc``), if any."""
    part = metric.partition(":")[0]
    wanted = f"{part}:clean_acc" if part in PARTS else "clean_acc"
    return wanted if wanted in once else next(iter(once), None)


def ranking(run: dict) -> tuple[str, str]:
    """(column, "max" | "min") that ranks ``run``: its ``rank_by``, or the highest robust accuracy."""
    return tuple(run.get("rank_by") or ("robust_acc", "max"))


def _rank_key(run: dict) -> list[float]:
    """Best first: the ranking column (adaptive where there is one) from the last setting back, then the
    clean metrics, highest first."""
    metric, direction = ranking(run)
    average = run["average"]
    value, adaptive = average.get(metric), average.get(adaptive_of(metric), {})
    values = [adaptive.get(s, value[s]) for s in reversed(_ordered(value))] if isinstance(value, dict) else [value]
    sign = -1 if direction == "max" else 1
    once, _, _ = columns(run)
    return [math.inf if v is None else sign * v for v in values] + [-(average.get(m) or 0) for m in once]


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def leaderboard(runs: list[dict]) -> list[dict]:
    """One row per run, best first (``_rank_key``): the model, protocol, the mean of every metric (as the
    run's ``average``), the ranking column, flags and versions."""
    rows = []
    for run in sorted(runs, key=_rank_key):
        model, (_, _, settings) = run["model"], columns(run)
        rows.append({
            "model": label(run), "paper": model.get("paper", ""), "arch": model.get("arch", ""),
            "method": model.get("method", ""), "protocol": run["protocol"]["name"],
            "overrides": run.get("overrides", {}), "counting": counting(run), "datasets": len(run["datasets"]),
            **{m: dict(v) if isinstance(v, dict) else v for m, v in run["average"].items()},
            "rank_by": list(ranking(run)), "main_setting": settings[-1] if settings else None,
            "test_time_defense": bool(run.get("test_time_defense")), "skipped": sorted(run.get("skipped", {})),
            "flags": sorted({f["flag"] for f in run.get("flags", [])}),
            "versions": {k: run["environment"].get(k) for k in ("vlmshield", "git_revision", "torch", "open_clip")},
        })
    return rows


def _defense_mark(row: dict, swept: list[str]) -> str:
    if not row["test_time_defense"]:
        return ""
    bounded = any(row.get(m) for m in swept if adaptive_of(m)) and not any(row.get(m) for m in swept
                                                                            if is_adaptive(m))
    return " (test-time defense, non-adaptive attack)" if bounded else " (test-time defense)"


def _leaderboard_md(rows: list[dict], cols: tuple) -> list[str]:
    once, swept, settings = cols
    shown = [m for m in swept if not is_adaptive(m)]
    titles = [title(m) for m in once] + [f"{title(m)} {s}" for m in shown for s in settings]
    lines = ["| # | model | arch | protocol | " + " | ".join(titles) + " | flags |", "|" + "---|" * (len(titles) + 5)]
    for rank, row in enumerate(rows, 1):
        protocol = row["protocol"] + (" (" + ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) + ")"
                                      if row["overrides"] else "")
        cells = [_percent(row.get(m)) for m in once]
        for m in shown:
            adaptive = row.get(adaptive_of(m)) or {}
            cells += [_percent((row.get(m) or {}).get(s))
                      + (f" / adaptive {_percent(adaptive[s])}" if s in adaptive else "") for s in settings]
        lines.append(f"| {rank} | {row['model']}{_defense_mark(row, swept)} | {row['arch']} | {protocol} | "
                     + " | ".join(cells) + f" | {', '.join(row['flags']) or '-'} |")
    metric, direction = rows[0]["rank_by"]
    lines += ["", f"Ranked by {title(metric)} ({'highest' if direction == 'max' else 'lowest'} first"
              + (", adaptive where there is one)." if adaptive_of(metric) else ").")]
    return lines


def _cells(cols: tuple) -> list[tuple[str, str | None]]:
    """Every column of a per-dataset table: (metric, None) for one measured once, (metric, setting) for
    one measured per setting."""
    once, swept, settings = cols
    return [(m, None) for m in once] + [(m, s) for m in swept for s in settings]


def _value(result: dict | None, metric: str, setting: str | None):
    value = None if result is None else result.get(metric)
    return value if setting is None else (value or {}).get(setting)


def _per_dataset_md(runs: list[dict], cols: tuple) -> list[str]:
    datasets = list(dict.fromkeys(name for run in runs for name in run["results"]))
    lines = []
    for metric, setting in _cells(cols):
        heading = " ".join(filter(None, (title(metric), setting)))
        lines += ["", f"### {heading}{_unit(metric)} (%)", "",
                  "| dataset | " + " | ".join(label(r) for r in runs) + " |", "|" + "---|" * (len(runs) + 1)]
        for name in [*datasets, "average"]:
            cells = [_percent(_value(run["average"] if name == "average" else run["results"].get(name),
                                     metric, setting)) for run in runs]
            lines.append(f"| {'**average**' if name == 'average' else name} | " + " | ".join(cells) + " |")
    return lines


def _write_csv(runs: list[dict], cols: tuple, path: Path) -> None:
    cells = _cells(cols)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["model", "protocol", "dataset", "n", *(m if s is None else f"{m}@{s}" for m, s in cells)])
        for run in runs:
            for name, result in [*run["results"].items(), ("average", {**run["average"], "n": ""})]:
                writer.writerow([label(run), run["protocol"]["name"], name, result["n"],
                                 *("" if (v := _value(result, m, s)) is None else v for m, s in cells)])


def _plots(runs: list[dict], cols: tuple, out: Path) -> list[Path]:
    from matplotlib.figure import Figure  # the figure API: no pyplot state, no process-wide backend

    once, _, settings = cols
    metric = ranking(runs[0])[0]
    measure, clean = title(metric) + _unit(metric), clean_of(metric, once)
    by_eps = all(map(_is_eps, settings))
    paths = [out / ("robust_vs_eps.png" if by_eps else f"{metric.replace(':', '_')}_by_trigger.png"),
             out / "per_dataset.png"]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for run in runs:
        values = run["average"].get(metric) or {}
        points = [(255 * parse_eps(s) if by_eps else i, values.get(s)) for i, s in enumerate(settings)]
        if by_eps and clean:
            points.insert(0, (0.0, run["average"].get(clean)))
        points = [(x, y) for x, y in points if y is not None]
        axes.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=label(run))
    if by_eps:
        axes.set(xlabel="eps (/255, Linf); 0 = clean", title=f"{measure} against the attack budget")
    else:
        axes.set_xticks(range(len(settings)), settings)
        axes.set(xlabel="trigger", title=f"{measure} by trigger")
    axes.set(ylabel=f"mean {measure} (%)", ylim=(0, 100))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[0], dpi=120)

    datasets = list(dict.fromkeys(name for run in runs for name in run["results"]))
    main = settings[-1] if settings else None
    figure = Figure(figsize=(max(6, 0.6 * len(datasets) * max(1, len(runs)) / 2 + 2), 4))
    axes = figure.subplots()
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        results = [run["results"].get(name) for name in datasets]
        where = [d + i * width for d in range(len(datasets))]
        light = [100 * (_value(r, clean, None) or 0) for r in results] if clean else [0] * len(datasets)
        bars = axes.bar(where, light, width, alpha=0.3 if main else 1.0, label=f"{label(run)} {title(clean or '')}")
        if main:
            axes.bar(where, [100 * (_value(r, metric, main) or 0) for r in results], width / 2,
                     color=bars.patches[0].get_facecolor()[:3] if bars.patches else None,
                     label=f"{label(run)} {title(metric)} {main}")
    axes.set_xticks([d + 0.4 - width / 2 for d in range(len(datasets))], datasets, rotation=45, ha="right",
                    fontsize=8)
    shown = f"{title(clean or '')} (light)" + (f" and {title(metric)} at {main}" if main else "")
    axes.set(ylabel="%", ylim=(0, 100), title=f"Per dataset: {shown}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=120)
    return paths


def write_report(runs: list[dict], out: str | os.PathLike, title: str = "vlmshield report") -> dict:
    """Write the report of ``runs`` into the folder ``out``; returns the leaderboard and the file paths."""
    if not runs:
        raise DataError("a report needs at least one run record.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols = columns(*runs)
    rows = leaderboard(runs)
    lines = [f"# {title}", "", "## Leaderboard (mean over datasets, %)", "", *_leaderboard_md(rows, cols)]
    protocols = {run["protocol"]["name"]: run["protocol"] for run in runs}
    lines += ["", "Protocols: " + "; ".join(f"**{name}**: {p['description']}" for name, p in protocols.items())]
    conventions = {counting(run) for run in runs}
    if len(conventions) > 1:
        lines += ["", "**Robust accuracy is counted differently across these runs** (" + "; ".join(
            f"{label(run)}: {counting(run)}" for run in runs) + "): their robust numbers do not compare."]
    skipped = [(label(run), line) for run in runs for line in format_skipped(run)]
    if skipped:
        lines += ["", "## Skipped datasets", ""] + [f"- {name}: {line}" for name, line in skipped]
    flagged = [(label(run), f) for run in runs for f in run.get("flags", [])]
    if flagged:
        lines += ["", "## Flags", ""] + [f"- {name}: {format_flag(f)}" for name, f in flagged]
    plots = _plots(runs, cols, out)
    lines += ["", "## Per dataset", *_per_dataset_md(runs, cols), "",
              *(f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in plots)]
    (out / "report.md").write_text("\n".join(lines))
    _write_csv(runs, cols, out / "report.csv")
    atomic_write_json(out / "report.json", {"record": "report", "leaderboard": rows, "runs": runs})
    return {"leaderboard": rows, "files": [str(p) for p in
                                           (out / "report.md", out / "report.csv", out / "report.json", *plots)]}


def format_run(run: dict) -> str:
    """A run as a Markdown table for the terminal: per dataset, every column of the record (adaptive
    numbers included), then the skipped datasets and the flags."""
    cols = columns(run)
    cells = _cells(cols)
    titles = [" ".join(filter(None, (title(m), s))) for m, s in cells]
    lines = [f"{label(run)} under {run['protocol']['name']}"
             + (" (overrides: " + ", ".join(f"{k}={v}" for k, v in run["overrides"].items()) + ")"
                if run.get("overrides") else ""), _how(run, cols), "",
             "| dataset | n | " + " | ".join(titles) + " |", "|" + "---|" * (len(titles) + 2)]
    rows = [*run["results"].items()] + ([("**average**", {**run["average"], "n": ""})] if len(run["results"]) > 1
                                       else [])
    for name, result in rows:
        lines.append(f"| {name} | {result['n']} | " + " | ".join(_percent(_value(result, m, s)) for m, s in cells)
                     + " |")
    return "\n".join(lines + format_skipped(run) + [format_flag(f) for f in run.get("flags", [])])
