"""Reports of protocol runs: one or several models' ``run.json`` as a table, a CSV, plots and a leaderboard.

``write_report(runs, out)`` writes into the folder ``out``:

- ``report.json``: the leaderboard rows and every run record, as read;
- ``report.csv``: one row per model and dataset (and the average): clean and robust accuracy by eps;
- ``report.md``: the leaderboard (average clean and robust accuracy per model, best robust first, with
  paper, architecture, protocol and flags), then clean and robust accuracy per dataset and model;
- ``robust_vs_eps.png``: average accuracy against eps, one line per model (eps 0 is clean accuracy);
- ``per_dataset.png``: per dataset, one bar per model: clean accuracy (light) with the robust accuracy at
  the largest eps over it.

A model defended at test time (TTC) is marked in every table: its number under a non-adaptive attack
is an upper bound, so its leaderboard cell shows the adaptive number beside it (``35.0 / adaptive 2.0``)
and the row is ranked by the adaptive one; a run without adaptive numbers says so. Each row keeps the
run's counting convention (robust accuracy over the clean-correct images or over all images) and the
report warns when runs that count differently share a table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..core import DataError, parse_eps
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


def _how(run: dict) -> str:
    """The run's counting and preprocessing in one line."""
    rules: dict[str, list[str]] = {}
    for name, rule in (run.get("preprocess") or {}).items():
        rules.setdefault(describe_preprocess(rule), []).append(name)
    shown = "; ".join(text if len(rules) == 1 else f"{text}: {', '.join(names)}" for text, names in rules.items())
    over = "all images" if counting(run) == "all" else "the clean-correct images"
    return f"robust accuracy over {over}" + (f"; preprocessing: {shown}" if shown else "")


def all_eps(runs: list[dict]) -> list[str]:
    """Every eps of the runs, smallest first."""
    return sorted({eps for run in runs for eps in run["average"]["robust_acc"]}, key=parse_eps)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def leaderboard(runs: list[dict]) -> list[dict]:
    """One row per run, best average robust accuracy at the largest eps first (ties: the next eps, then clean)."""
    rows = []
    for run in runs:
        eps = list(run["average"]["robust_acc"])
        model = run["model"]
        rows.append({
            "model": label(run), "paper": model.get("paper", ""), "arch": model.get("arch", ""),
            "method": model.get("method", ""), "protocol": run["protocol"]["name"],
            "overrides": run.get("overrides", {}), "counting": counting(run), "datasets": len(run["datasets"]),
            "clean_acc": run["average"]["clean_acc"], "robust_acc": dict(run["average"]["robust_acc"]),
            "adaptive_robust_acc": dict(run["average"].get("adaptive_robust_acc", {})),
            "main_eps": eps[-1] if eps else None, "test_time_defense": bool(run.get("test_time_defense")),
            "flags": sorted({f["flag"] for f in run.get("flags", [])}),
            "versions": {k: run["environment"].get(k) for k in ("vlmshield", "git_revision", "torch", "open_clip")},
        })

    def key(row):  # robust accuracy (adaptive where there is one) from the largest eps down, then clean accuracy
        robust = [row["adaptive_robust_acc"].get(e, row["robust_acc"][e])
                  for e in sorted(row["robust_acc"], key=parse_eps, reverse=True)]
        return [-(value if value is not None else -1) for value in robust] + [-(row["clean_acc"] or 0)]

    return sorted(rows, key=key)


def _leaderboard_md(rows: list[dict], eps_values: list[str]) -> list[str]:
    lines = ["| # | model | arch | protocol | clean | " + " | ".join(f"robust {e}" for e in eps_values)
             + " | flags |", "|" + "---|" * (len(eps_values) + 6)]
    for rank, row in enumerate(rows, 1):
        mark = ""
        if row["test_time_defense"]:
            mark = " (test-time defense)" if row["adaptive_robust_acc"] else " (test-time defense, non-adaptive attack)"
        protocol = row["protocol"] + (" (" + ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) + ")"
                                      if row["overrides"] else "")
        robust = " | ".join(_percent(row["robust_acc"].get(e)) + (
            f" / adaptive {_percent(row['adaptive_robust_acc'][e])}" if e in row["adaptive_robust_acc"] else "")
            for e in eps_values)
        lines.append(f"| {rank} | {row['model']}{mark} | {row['arch']} | {protocol} | {_percent(row['clean_acc'])} | "
                     f"{robust} | {', '.join(row['flags']) or '-'} |")
    return lines


def _per_dataset_md(runs: list[dict], eps_values: list[str]) -> list[str]:
    datasets = list(dict.fromkeys(name for run in runs for name in run["results"]))
    columns = [("clean", None)] + [(f"robust {e}", e) for e in eps_values]
    lines = []
    for title, eps in columns:
        lines += ["", f"### {title} accuracy (%)", "",
                  "| dataset | " + " | ".join(label(r) for r in runs) + " |", "|" + "---|" * (len(runs) + 1)]
        for name in [*datasets, "average"]:
            cells = []
            for run in runs:
                result = run["average"] if name == "average" else run["results"].get(name)
                value = None if result is None else (result["clean_acc"] if eps is None
                                                     else result["robust_acc"].get(eps))
                cells.append(_percent(value))
            shown = "**average**" if name == "average" else name
            lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return lines


def _write_csv(runs: list[dict], eps_values: list[str], path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["model", "protocol", "dataset", "n", "clean_acc", *[f"robust_acc@{e}" for e in eps_values]])
        for run in runs:
            rows = [(name, r) for name, r in run["results"].items()] + [("average", {**run["average"], "n": ""})]
            for name, result in rows:
                writer.writerow([label(run), run["protocol"]["name"], name, result["n"], result["clean_acc"],
                                 *[result["robust_acc"].get(e, "") for e in eps_values]])


def _plots(runs: list[dict], eps_values: list[str], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "robust_vs_eps.png", out / "per_dataset.png"]
    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        points = [(0.0, run["average"]["clean_acc"])] + [
            (255 * parse_eps(e), v) for e, v in run["average"]["robust_acc"].items() if v is not None]
        axes.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=label(run))
    axes.set(xlabel="eps (/255, Linf); 0 = clean", ylabel="mean accuracy (%)", ylim=(0, 100),
             title="Accuracy against the attack budget")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[0], dpi=120)
    plt.close(figure)

    datasets = list(dict.fromkeys(name for run in runs for name in run["results"]))
    eps = eps_values[-1] if eps_values else None
    figure, axes = plt.subplots(figsize=(max(6, 0.6 * len(datasets) * max(1, len(runs)) / 2 + 2), 4))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        results = [run["results"].get(name) for name in datasets]
        clean = [0 if r is None or r["clean_acc"] is None else 100 * r["clean_acc"] for r in results]
        robust = [0 if r is None or r["robust_acc"].get(eps) is None else 100 * r["robust_acc"][eps]
                  for r in results] if eps else None
        where = [d + i * width for d in range(len(datasets))]
        bars = axes.bar(where, clean, width, alpha=0.3 if eps else 1.0, label=f"{label(run)} clean")
        if robust is not None:
            axes.bar(where, robust, width, color=bars.patches[0].get_facecolor()[:3], label=f"{label(run)} {eps}")
    axes.set_xticks([d + 0.4 - width / 2 for d in range(len(datasets))], datasets, rotation=45, ha="right",
                    fontsize=8)
    axes.set(ylabel="accuracy (%)", ylim=(0, 100),
             title=f"Per dataset: clean (light) and robust at {eps}" if eps else "Per dataset: clean accuracy")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=120)
    plt.close(figure)
    return paths


def write_report(runs: list[dict], out: str | os.PathLike, title: str = "vlmshield report") -> dict:
    """Write the report of ``runs`` into the folder ``out``; returns the leaderboard and the file paths."""
    if not runs:
        raise DataError("a report needs at least one run record.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eps_values = all_eps(runs)
    rows = leaderboard(runs)
    lines = [f"# {title}", "", "## Leaderboard (mean over datasets, %)", "", *_leaderboard_md(rows, eps_values)]
    protocols = {run["protocol"]["name"]: run["protocol"] for run in runs}
    lines += ["", "Protocols: " + "; ".join(f"**{name}**: {p['description']}" for name, p in protocols.items())]
    conventions = {counting(run) for run in runs}
    if len(conventions) > 1:
        lines += ["", "**Robust accuracy is counted differently across these runs** (" + "; ".join(
            f"{label(run)}: {counting(run)}" for run in runs) + "): their robust numbers do not compare."]
    flagged = [(label(run), f) for run in runs for f in run.get("flags", [])]
    if flagged:
        lines += ["", "## Flags", ""] + [f"- {name}: {format_flag(f)}" for name, f in flagged]
    lines += ["", "## Per dataset", *_per_dataset_md(runs, eps_values), "",
              "![accuracy against eps](robust_vs_eps.png)", "", "![per dataset](per_dataset.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    _write_csv(runs, eps_values, out / "report.csv")
    plots = _plots(runs, eps_values, out)
    atomic_write_json(out / "report.json", {"record": "report", "leaderboard": rows, "runs": runs})
    return {"leaderboard": rows, "files": [str(p) for p in
                                           (out / "report.md", out / "report.csv", out / "report.json", *plots)]}


def format_run(run: dict) -> str:
    """A run as a Markdown table for the terminal: per dataset, clean and robust by eps, then the flags."""
    eps_values = list(run["average"]["robust_acc"])
    lines = [f"{label(run)} under {run['protocol']['name']}"
             + (" (overrides: " + ", ".join(f"{k}={v}" for k, v in run["overrides"].items()) + ")"
                if run.get("overrides") else ""), _how(run), "",
             "| dataset | n | clean | " + " | ".join(f"robust {e}" for e in eps_values) + " |",
             "|" + "---|" * (len(eps_values) + 3)]
    rows = [*run["results"].items()] + ([("**average**", {**run["average"], "n": ""})] if len(run["results"]) > 1
                                       else [])
    for name, result in rows:
        robust = " | ".join(_percent(result["robust_acc"].get(e)) for e in eps_values)
        lines.append(f"| {name} | {result['n']} | {_percent(result['clean_acc'])} | {robust} |")
    return "\n".join(lines + [format_flag(f) for f in run.get("flags", [])])
