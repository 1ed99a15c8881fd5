"""Running a protocol: every dataset it names, every setting it sweeps, one run record.

``run_protocol(model, "robustvlm")`` builds each dataset with the protocol's preprocessing, runs one
``evaluate`` per eps (clean accuracy comes with each: the same seeded subset) and combines them into one
run record: per dataset and on average, clean accuracy and robust accuracy by eps, the sanity flags,
the model's card (paper, architecture, threat model), the protocol with every parameter, and the
preprocessing and counting convention each dataset was evaluated with. Overriding ``n``, the datasets
or the counting convention is allowed (smoke runs, comparisons) and is written into the record as an
override, so that a number is never passed off as the protocol's. With ``out=DIR`` each evaluation
resumes where it stopped and the run record is ``DIR/run.json``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..core import VLM, LabelledImages, ParameterError, Protocol, TestTimeDefense, get_host, get_protocol, parse_eps
from ..core.data import check_distinct, expand_specs, parse_dataset_spec
from ..core.evaluator import COUNTINGS
from ..core.preprocess import preprocessed_dataset
from .distributed import default_device, is_main_process
from .evaluation import evaluate, mean_of, resolve_defense, resolve_model
from .records import atomic_write_json, environment


def apply_templates(data: LabelledImages, convention: str) -> LabelledImages:
    """Use the dataset's prompts of ``convention`` ('dataset' keeps them as built)."""
    if convention == "dataset":
        return data
    sets = getattr(data, "template_sets", None) or {}
    if convention not in sets:
        raise ParameterError(f"{data.name} has no {convention!r} prompt templates (it has "
                             f"{', '.join(sets) or 'only its own'}); choose a protocol with templates='dataset'.")
    data.templates = list(sets[convention])
    return data


def protocol_datasets(protocol: str | Protocol, spec, image_size: int = 224, download: bool = False) -> list:
    """Build the datasets of ``spec`` (names, 'name:/root', collections, built datasets) preprocessed as
    ``protocol`` says (``preprocessed_dataset``); each one's ``preprocess`` attribute is the rule it was
    built with."""
    protocol = get_protocol(protocol)
    built = []
    for item in expand_specs(spec):
        name = get_host().get("dataset", parse_dataset_spec(item)[0]).obj.name if isinstance(item, str) else item.name
        built.append(preprocessed_dataset(item, protocol.preprocessing(name), image_size=image_size,
                                          download=download))
    return check_distinct(built)


def _model_info(model, loaded: VLM) -> dict:
    """What a leaderboard keeps about a model (RobustBench's model_info): its card, when it has one."""
    info = {"name": getattr(loaded, "name", None) or type(loaded).__name__}
    if isinstance(model, str) and model in get_host().registries["model"]:
        card = get_host().get("model", model).obj
        info.update(name=card.name, arch=card.arch, method=card.method, base_model=card.base_model,
                    paper=card.paper, threat_model=card.threat_model, source=card.source,
                    published=card.metrics)
    elif isinstance(model, str):
        info["source"] = model
    return info


def _names(spec):
    """A datasets override as the record keeps it: the spec as written, built datasets by name."""
    if spec is None or isinstance(spec, str):
        return spec
    items = [spec] if isinstance(spec, Dataset) else list(spec)
    return [item if isinstance(item, str) else getattr(item, "name", type(item).__name__) for item in items]


def _slug(eps: str) -> str:
    return eps.replace("/", "-").replace(".", "p")


def run_protocol(model, protocol: str | Protocol, dataset=None, *, n: int | None = None, defense=None,
                 defense_params: dict | None = None, out=None, device=None, batch_size: int = 64, seed: int = 0,
                 weights: bool = True, progress: bool | None = None, download: bool = False,
                 adaptive: bool = True, counting: str | None = None) -> dict:
    """Evaluate ``model`` (a zoo name or a VLM) under ``protocol``; returns the run record.

    ``dataset``, ``n`` and ``counting`` override the protocol's (recorded as overrides); ``out`` is a
    folder. Each dataset is built with the protocol's preprocessing rule for it; the record holds the
    rules applied (``preprocess``, by dataset) and the counting convention (``counting``). Around a
    test-time defense, ``adaptive`` also runs its adaptive attacks (``adaptive_robust_acc`` per eps).
    """
    protocol = get_protocol(protocol)
    if counting is not None and counting not in COUNTINGS:
        raise ParameterError(f"counting must be one of {', '.join(COUNTINGS)}; got {counting!r}.")
    overrides = {k: v for k, v in (("datasets", _names(dataset)), ("n", n)) if v is not None}
    if counting is not None and counting != protocol.counting:
        overrides["counting"] = counting
    n = protocol.n if n is None else n
    counting = protocol.counting if counting is None else counting
    vlm, _ = resolve_model(model, torch.device(device) if device else default_device(), weights)
    info = _model_info(model, vlm)
    if not weights:
        info["weights"] = "random (smoke run)"
    defense_obj = resolve_defense(defense, defense_params)
    spec = dataset if dataset is not None else protocol.datasets
    if not spec:
        raise ParameterError(f"protocol {protocol.name!r} names no datasets; give some.")
    image_size = vlm.image_size[0] if isinstance(vlm, VLM) else 224
    built = [apply_templates(d, protocol.templates)
             for d in protocol_datasets(protocol, spec, image_size=image_size, download=download)]
    out = Path(out) if out is not None else None
    started, clock = datetime.now(timezone.utc), time.perf_counter()

    def one(eps: str | None) -> dict:
        where = None if out is None else out / ("clean.json" if eps is None else f"eps-{_slug(eps)}.json")
        attack = {} if eps is None else {"attack": protocol.attack, "eps": parse_eps(eps), "steps": protocol.steps,
                                         "attack_params": dict(protocol.attack_params) or None}
        return evaluate(vlm, built, **attack, defense=defense_obj, n=n, batch_size=batch_size, seed=seed,
                        device=device, out=where, progress=progress, adaptive=adaptive, counting=counting)

    records = [one(eps) for eps in protocol.eps] if protocol.attack else [one(None)]
    results = {}
    for data in built:
        first = records[0]["results"][data.name]
        results[data.name] = {"n": first["n"], "num_classes": first["num_classes"], "templates": first["templates"],
                              "clean_acc": first["clean_acc"],
                              "robust_acc": {eps: r["results"][data.name]["robust_acc"]
                                             for eps, r in zip(protocol.eps, records, strict=False)}}
        adaptive_acc = {eps: r["results"][data.name]["adaptive_robust_acc"]
                        for eps, r in zip(protocol.eps, records, strict=False)
                        if "adaptive_robust_acc" in r["results"][data.name]}
        if adaptive_acc:
            results[data.name]["adaptive_robust_acc"] = adaptive_acc
    average = {"clean_acc": mean_of([r["clean_acc"] for r in results.values()]),
               "robust_acc": {eps: mean_of([r["robust_acc"][eps] for r in results.values()]) for eps in protocol.eps}}
    if all("adaptive_robust_acc" in r for r in results.values()) and results:
        average["adaptive_robust_acc"] = {eps: mean_of([r["adaptive_robust_acc"][eps] for r in results.values()])
                                          for eps in next(iter(results.values()))["adaptive_robust_acc"]}
    flags = _unique([f for r in records for f in r["flags"]])
    record = {
        "record": "protocol-run", "protocol": protocol.config(), "overrides": overrides, "model": info,
        "defense": defense_obj.config() if defense_obj else None,
        "test_time_defense": isinstance(defense_obj, TestTimeDefense),
        "datasets": [d.name for d in built], "n": n, "seed": seed, "counting": counting,
        "preprocess": {d.name: d.preprocess for d in built}, "results": results, "average": average,
        "flags": flags, "evaluations": [r["attack"] for r in records],
        "adaptive_attacks": records[0].get("adaptive_attacks", []), "environment": environment(),
        "started_at": started.isoformat(timespec="seconds"), "wall_time_s": round(time.perf_counter() - clock, 3),
    }
    if out is not None and is_main_process():
        atomic_write_json(out / "run.json", record)
    return record


def _unique(flags: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for entry in flags:
        key = (entry["flag"], entry.get("dataset"), entry["detail"])
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def measure_for_card(vlm: VLM, protocol="world", *, progress=None, out=None) -> dict:
    """A card's ``metrics``: the protocol (every parameter), clean and robust accuracy per dataset and on
    average (fractions), measured with ``run_protocol`` (resumable in ``out``)."""
    protocol = get_protocol(protocol)
    measured = run_protocol(vlm, protocol, progress=progress, out=out)
    results = measured["results"]
    return {"protocol": protocol.config(),
            "clean": {d: r["clean_acc"] for d, r in results.items()}, "clean_mean": measured["average"]["clean_acc"],
            "robust": {e: {d: r["robust_acc"][e] for d, r in results.items()} for e in protocol.eps},
            "robust_mean": measured["average"]["robust_acc"]}
