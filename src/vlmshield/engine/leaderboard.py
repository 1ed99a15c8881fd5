"""Leaderboards: several models under one protocol.

``leaderboard(["clip-tinyvit4", "clip-tinyrn"], "world", out="runs/world-board")`` runs the protocol on each
model into ``out/<model>/`` (a model whose ``run.json`` already holds this protocol, these overrides,
this defense and this very model, by its weights' and config's sha256, is not run again; an interrupted one
resumes batch by batch) and writes the combined
report (``leaderboard.md``, ``report.csv``, ``report.json``, plots) into ``out``. Every row keeps what
RobustBench's model_info keeps: paper, architecture, protocol, versions, and the mean of each metric of
the protocol's evaluator (clean and robust accuracy by eps, attack success rate by trigger, a domain
pair's source and target accuracy), ranked by the protocol's ``rank_by`` (``write_report``).
"""

from __future__ import annotations

import shutil

from ..core import ParameterError, canonical_name, get_protocol, load_model, model_identity, same_model
from .distributed import is_main_process
from .protocol_runs import run_protocol
from .records import check_destination
from .reports import load_run, write_report


def _matches(run: dict, protocol, overrides: dict, defense, seed: int) -> bool:
    return (run.get("protocol") == protocol.config() and run.get("overrides") == overrides
            and (run.get("defense") or {}).get("name") == defense and run.get("seed") == seed)


def _of_model(run: dict, model: str, weights: bool) -> bool:
    """Whether ``run`` measured the model ``model`` names now (a folder or a Hub branch may have changed)."""
    recorded = run.get("model") or {}
    if "weights_sha256" not in recorded:  # a record from before models had identities: measure again
        return False
    return same_model(recorded, model_identity(load_model(model, device="cpu", weights=weights)))


def leaderboard(models: list[str], protocol, out, *, dataset=None, n: int | None = None, defense: str | None = None,
          defense_params: dict | None = None, device=None, batch_size: int = 64, seed: int = 0,
          weights: bool = True, progress: bool | None = None, download: bool = False) -> dict:
    """Run (or resume) ``protocol`` on every model and write the leaderboard into ``out``."""
    if not models:
        raise ParameterError("a leaderboard needs at least one model.")
    protocol = get_protocol(protocol)
    overrides = {k: v for k, v in (("datasets", dataset), ("n", n)) if v is not None}
    out = check_destination(out, folder=True)
    runs = []
    for model in models:
        folder = out / (canonical_name(model).replace(":", "_").replace("/", "_") + (f"+{defense}" if defense else ""))
        previous = folder / "run.json"
        if previous.exists():
            run = load_run(previous)
            if _matches(run, protocol, overrides, defense, seed) and _of_model(run, model, weights):
                runs.append(run)
                continue
        runs.append(run_protocol(model, protocol, dataset, n=n, defense=defense, defense_params=defense_params,
                                 out=folder, device=device, batch_size=batch_size, seed=seed, weights=weights,
                                 progress=progress, download=download, overwrite=True))  # its own, stale
    if not is_main_process():
        return {"leaderboard": [], "files": []}
    report = write_report(runs, out, title=f"Leaderboard: {protocol.name} protocol")
    shutil.copyfile(out / "report.md", out / "leaderboard.md")
    return report
