"""Transfer of adversarial examples between the world's models: the "proxy robustness" of HPT-GPD.

``transfer_matrix(models)`` crafts ``apgd-ce`` examples on each source model, task by task over the
world's suite, and scores them on every model: entry [source][target] is the target's mean accuracy
on the source's adversarial examples. The diagonal is each model's own (white-box) robust accuracy;
an off-diagonal entry far above it means the target resists examples crafted on another
architecture, which is what a heterogeneous proxy relies on.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from vlmshield.api import ParameterError, datasets, derive_seed, get_host, subset_indices


def transfer_matrix(models: list[str], *, eps: float = 4 / 255, steps: int = 50, n: int = 500,
                    dataset: str = "world", batch_size: int = 100, seed: int = 0,
                    progress: bool | None = None) -> dict:
    """``{"matrix": {source: {target: accuracy}}, "clean": {model: accuracy}, ...}`` over the suite."""
    if len(models) < 2:
        raise ParameterError(f"a transfer matrix needs at least two models; got {models!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"n must be a whole number of images per task, 1 or more; got {n!r}.")
    host = get_host()
    loaded = {name: host.get("model", name).obj.load() for name in models}
    tasks = datasets(dataset, image_size=32)
    attack = host.create("attack", "apgd-ce", eps=eps, steps=steps)
    correct = {s: {t: [] for t in models} for s in models}
    clean = {t: [] for t in models}
    bar = tqdm(total=len(tasks) * len(models), desc="transfer", unit="attack",
               disable=None if progress is None else not progress)
    for task in tasks:
        indices = subset_indices(len(task), n, seed)
        x = torch.stack([task[i][0] for i in indices])
        y = torch.tensor([int(task[i][1]) for i in indices])
        classifiers = {name: vlm.zero_shot(task.classnames, task.templates) for name, vlm in loaded.items()}
        with torch.no_grad():
            for target, classifier in classifiers.items():
                clean[target].append((classifier(x).argmax(1) == y).float().mean().item())
        for source in models:
            adversarial = torch.cat([attack(classifiers[source], x[i:i + batch_size], y[i:i + batch_size],
                                            seed=derive_seed(seed, task.name, source, i))
                                     for i in range(0, len(x), batch_size)])
            with torch.no_grad():
                for target, classifier in classifiers.items():
                    correct[source][target].append((classifier(adversarial).argmax(1) == y).float().mean().item())
            bar.update()
    bar.close()
    return {"matrix": {s: {t: sum(v) / len(v) for t, v in row.items()} for s, row in correct.items()},
            "clean": {t: sum(v) / len(v) for t, v in clean.items()},
            "attack": attack.config(), "n": n, "tasks": [t.name for t in tasks], "seed": seed}


def format_matrix(result: dict) -> str:
    """The matrix as a Markdown table: rows are sources, columns targets, percentages."""
    models = list(result["clean"])
    lines = ["| crafted on \\ scored on | " + " | ".join(models) + " |", "|---|" + "---|" * len(models),
             "| (clean) | " + " | ".join(f"{100 * result['clean'][t]:.1f}" for t in models) + " |"]
    for source in models:
        lines.append(f"| {source} | " + " | ".join(f"{100 * result['matrix'][source][t]:.1f}" for t in models) + " |")
    return "\n".join(lines)
