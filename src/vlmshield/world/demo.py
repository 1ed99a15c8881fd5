"""``vlmshield demo``: the main job of vlmshield on the world, offline, in a few minutes on a CPU.

Every world model in the zoo (the shipped vanilla tiny CLIPs, and the defended ones that plugins
register) is evaluated on the world's zero-shot suite: clean accuracy, and robust accuracy under
``apgd-ce`` at 1/255 (TeCoA's and TTC's budget) and 4/255 (the world's). Models with a backdoor planted or
removed (their card's threat model names a ``backdoor`` and its ``target``) are measured instead by clean
accuracy and the backdoor's attack success rate on the task holding the target. Classifiers adapted to a
domain pair of the world (their card's training data is ``world-da/...``) are measured on that pair's target
test set: clean accuracy and robust accuracy under the same attack. The demo prints the
tables and writes to its output folder a Markdown report, the plot of robust accuracy against eps, and the
evaluation records (JSON).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from vlmshield.api import ParameterError, datasets, evaluate, format_eps, get_host

from .models import ARCHS

EPS = (1 / 255, 4 / 255)
#: The demo's reduced protocol (the world's full one is the `world` protocol: aa-lite, 50 steps, n=250 per task).
DEMO_N, DEMO_STEPS = 64, 20


def world_models() -> list[str]:
    """The zoo's world models: vanilla ones first, then each defense, in name order; the CLIPs, then the
    classifiers adapted to a world domain pair."""
    cards = [r.obj for r in get_host().registries["model"]
             if (r.obj.family == "clip" and r.obj.arch in ARCHS) or adapted_pair(r.obj.name)]
    return [c.name for c in sorted(cards, key=lambda c: (c.family != "clip", c.method != "none", c.method, c.name))]


def adapted_pair(name: str) -> str | None:
    """The world domain pair a classifier was adapted to (its card's training data), or None."""
    card = get_host().get("model", name).obj
    return card.training_data if card.family == "classifier" and card.training_data.startswith("world-da/") else None


def backdoor_of(name: str) -> dict:
    """The backdoor a world model's card names (``backdoor``, ``target``), or {} for the others."""
    threat = get_host().get("model", name).obj.threat_model
    return threat if "backdoor" in threat else {}


def _asr_task(target: str, dataset: str) -> str:
    """The task of the suite whose classes hold ``target``."""
    for task in datasets(dataset):
        if target in task.classnames:
            return task.name
    raise ParameterError(f"no task of {dataset} has the class {target!r}, so no attack success rate can be measured.")


def run_demo(out: str | Path = "demo", *, models: list[str] | None = None, n: int = DEMO_N,
             steps: int = DEMO_STEPS, eps: tuple[float, ...] = EPS, dataset: str = "world",
             batch_size: int = 100, progress: bool | None = None) -> dict:
    """Evaluate the world's models; write ``report.md``, ``robust_vs_eps.png`` and ``summary.json``."""
    models = world_models() if models is None else list(models)
    if not models:
        raise ParameterError("no world model is registered: the world's weights are missing from this install.")
    out = Path(out)
    (out / "records").mkdir(parents=True, exist_ok=True)
    host, clock = get_host(), time.perf_counter()
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ParameterError(f"steps is the number of apgd-ce iterations, a whole number, 1 or more; got {steps!r}.")
    backdoored = {name: backdoor_of(name) for name in models if backdoor_of(name)}
    adapted = {name: adapted_pair(name) for name in models if adapted_pair(name)}
    bar = tqdm(total=(len(models) - len(backdoored)) * len(eps) + len(backdoored), desc="demo", unit="run",
               disable=None if progress is None else not progress)
    summary: dict = {"models": {}, "attack": "apgd-ce", "steps": steps, "n": n, "eps": list(eps), "dataset": dataset,
                     "backdoors": {}, "adaptation": {}}
    for name, backdoor in backdoored.items():
        bar.set_postfix_str(f"{name} {backdoor['backdoor']}")
        summary["backdoors"][name] = measure_backdoor(host.get("model", name).obj.load(), backdoor, dataset, n,
                                                      batch_size, out / "records" / f"{name}")
        bar.update()
    for name, pair in adapted.items():
        classifier, target = host.get("model", name).obj.load(), datasets(pair)[0].target_test
        row = {"pair": pair, "robust": {}}
        for e in eps:
            bar.set_postfix_str(f"{name} eps {format_eps(e)}")
            record = evaluate(classifier, target, evaluator="accuracy", attack="apgd-ce",
                              eps=e, steps=steps, n=n, batch_size=batch_size, progress=False,
                              out=out / "records" / f"{name}-eps{round(e * 255)}.json")
            row["clean"], row["robust"][format_eps(e)] = record["average"]["clean_acc"], record["average"]["robust_acc"]
            bar.update()
        summary["adaptation"][name] = row
    for name in (m for m in models if m not in backdoored and m not in adapted):
        vlm = host.get("model", name).obj.load()
        row: dict = {"robust": {}, "tasks": {}}
        for e in eps:
            bar.set_postfix_str(f"{name} eps {format_eps(e)}")
            record = evaluate(vlm, dataset, attack="apgd-ce", eps=e, steps=steps, n=n, batch_size=batch_size,
                              out=out / "records" / f"{name}-eps{round(e * 255)}.json", progress=False)
            row["clean"] = record["average"]["clean_acc"]
            row["robust"][format_eps(e)] = record["average"]["robust_acc"]
            for task, result in record["results"].items():
                row["tasks"].setdefault(task, {"clean": result["clean_acc"], "robust": {}})
                row["tasks"][task]["robust"][format_eps(e)] = result["robust_acc"]
            bar.update()
        summary["models"][name] = row
    bar.close()
    summary["wall_time_s"] = round(time.perf_counter() - clock, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["models"]:
        plot(summary, out / "robust_vs_eps.png")
    (out / "report.md").write_text(report(summary))
    return summary


def measure_backdoor(vlm, backdoor: dict, dataset: str, n: int, batch_size: int, out: Path) -> dict:
    """Mean clean accuracy over ``dataset`` and the attack success rate of ``backdoor`` on its target's task."""
    task = _asr_task(backdoor["target"], dataset)
    clean = evaluate(vlm, dataset, n=n, batch_size=batch_size, out=out.with_name(out.name + "-clean.json"),
                     progress=False)["average"]["clean_acc"]
    asr = evaluate(vlm, task, evaluator="asr", attack=backdoor["backdoor"],
                   attack_params={"target": backdoor["target"]}, n=n, batch_size=batch_size,
                   out=out.with_name(out.name + "-asr.json"), progress=False)
    return {"trigger": backdoor["backdoor"], "target": backdoor["target"], "task": task, "clean": clean,
            "asr": asr["average"]["asr"]}


def backdoor_table(summary: dict) -> str:
    """Clean accuracy and attack success rate (percent) of each backdoored or cleaned model."""
    lines = ["| model | trigger | target (task) | clean | ASR |", "|---|---|---|---|---|"]
    for name, row in summary["backdoors"].items():
        lines.append(f"| {name} | {row['trigger']} | {row['target']} ({row['task']}) | {100 * row['clean']:.1f} | "
                     f"{100 * row['asr']:.1f} |")
    return "\n".join(lines)


def adaptation_table(summary: dict) -> str:
    """Target clean and robust accuracy (percent) of each classifier adapted to a world domain pair."""
    eps = [format_eps(e) for e in summary["eps"]]
    lines = ["| model | pair | target clean | " + " | ".join(f"robust {e}" for e in eps) + " |",
             "|---|---|---|" + "---|" * len(eps)]
    for name, row in summary["adaptation"].items():
        lines.append(f"| {name} | {row['pair']} | {100 * row['clean']:.1f} | "
                     + " | ".join(f"{100 * row['robust'][e]:.1f}" for e in eps) + " |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    """Mean clean and robust accuracy (percent) of each model over the suite."""
    eps = [format_eps(e) for e in summary["eps"]]
    lines = ["| model | clean | " + " | ".join(f"robust {e}" for e in eps) + " |", "|---|---|" + "---|" * len(eps)]
    for name, row in summary["models"].items():
        lines.append(f"| {name} | {100 * row['clean']:.1f} | "
                     + " | ".join(f"{100 * row['robust'][e]:.1f}" for e in eps) + " |")
    return "\n".join(lines)


def task_table(summary: dict, eps: str) -> str:
    """Per-task clean / robust accuracy (percent) at one eps."""
    models = list(summary["models"])
    tasks = list(next(iter(summary["models"].values()))["tasks"])
    lines = ["| task | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for task in tasks:
        cells = [summary["models"][m]["tasks"][task] for m in models]
        lines.append(f"| {task} | " + " | ".join(f"{100 * c['clean']:.1f} / {100 * c['robust'][eps]:.1f}"
                                                 for c in cells) + " |")
    return "\n".join(lines)


def report(summary: dict) -> str:
    last = format_eps(summary["eps"][-1])
    return "\n".join([
        "# vlmshield demo: the world", "",
        f"Zero-shot accuracy on the world's suite ({summary['dataset']}), n={summary['n']} per task, "
        f"robust accuracy under {summary['attack']} ({summary['steps']} steps, Linf). "
        f"Run time {summary['wall_time_s']} s.", "",
        *(["## Mean over the suite (%)", "", summary_table(summary), "",
           f"## Per task, clean / robust at {last} (%)", "", task_table(summary, last), "",
           "![robust accuracy against eps](robust_vs_eps.png)", ""] if summary["models"] else []),
        *(["## Backdoors: clean accuracy and attack success rate (%)", "",
           f"Attack success rate: triggered images of the target's task whose label is not the target, "
           f"classified as the target; n={summary['n']} per task.", "", backdoor_table(summary), ""]
          if summary.get("backdoors") else []),
        *(["## Domain adaptation: accuracy on the target domain (%)", "",
           f"Classifiers adapted to a world domain pair, on its target test set: clean accuracy and robust "
           f"accuracy under {summary['attack']}; n={summary['n']}.", "", adaptation_table(summary), ""]
          if summary.get("adaptation") else []),
        "The evaluation records (configuration, versions, per-task numbers) are in `records/`.", "",
    ])


def plot(summary: dict, path: Path) -> None:
    """Robust accuracy against eps, one line per model, as a PNG (matplotlib's figure API: no pyplot state,
    no change of the process's backend)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    xs = [0.0] + [255 * e for e in summary["eps"]]
    for name, row in summary["models"].items():
        ys = [100 * row["clean"]] + [100 * row["robust"][format_eps(e)] for e in summary["eps"]]
        axes.plot(xs, ys, marker="o", label=name)
    axes.set_xlabel("eps (x/255, Linf)")
    axes.set_ylabel("mean zero-shot accuracy (%)")
    axes.set_title(f"World suite, {summary['attack']} {summary['steps']} steps, n={summary['n']}/task")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
