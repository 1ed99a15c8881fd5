"""Running a protocol: every dataset it names, every setting it sweeps, one run record.

``run_protocol(model, "robustvlm")`` builds each dataset with the protocol's preprocessing, runs one
``evaluate`` per setting (each eps, or each backdoor trigger; the metrics that do not depend on the attack
come with each, on the same seeded subset) with the protocol's evaluator and combines them into one run
record: per dataset and on average, the evaluator's metrics, the sanity flags, the model's card (paper,
architecture, threat model), the protocol with every parameter, and the preprocessing and counting
convention each dataset was evaluated with. Overriding ``n``, the datasets or the counting convention is
allowed (smoke runs, comparisons) and is written into the record as an override, so that a number is
never passed off as the protocol's. With ``out=DIR`` each evaluation resumes where it stopped and the run
record is ``DIR/run.json``.

The numbers of a run record (``results[dataset]`` and ``average``), fractions in [0, 1]:

- a metric in the evaluator's ``clean_metrics`` is one value: ``"clean_acc": 0.91``;
- every other metric is ``{setting: value}``, by eps label or trigger name: ``"robust_acc": {"4/255":
  0.12}``, ``"asr": {"badnet": 0.97}``; around a test-time defense the adaptive attacks' numbers too:
  ``"robust_acc:bpda-eot"`` (one attack) and ``"adaptive_robust_acc"`` (the worst case of all);
- a domain pair's metrics are those of its labelled source and target test set, prefixed by the part:
  ``"source:clean_acc"``, ``"source:robust_acc": {...}``, ``"target:clean_acc"``, ``"target:robust_acc":
  {...}``; its ``n`` counts the images of both, ``source:n`` and ``target:n`` each's.

Beside them: ``rank_by`` ([column, "max" | "min"], which a leaderboard ranks on: the protocol's or its
evaluator's, on the target of domain pairs) and ``skipped`` ({dataset: reason}, the datasets the
evaluator could not score, e.g. ``asr`` on a task without the backdoor's target class).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from torch.utils.data import Dataset

from ..core import (
    VLM,
    DomainPair,
    LabelledImages,
    ParameterError,
    Protocol,
    TestTimeDefense,
    get_host,
    get_protocol,
    input_size,
    parse_eps,
)
from ..core.data import check_distinct, expand_specs, parse_dataset_spec
from ..core.evaluator import COUNTINGS
from ..core.preprocess import preprocessed_dataset
from .distributed import is_main_process, resolve_device
from .evaluation import PARTS, evaluate, mean_of, resolve_defense, resolve_model, unprefixed
from .records import atomic_write_json, check_destination, environment


def _with_templates(data, convention: str):
    """``data`` with the prompts of ``convention`` (both labelled parts of a domain pair)."""
    if isinstance(data, DomainPair):
        apply_templates(data.source, convention)
        apply_templates(data.target_test, convention)
        return data
    return apply_templates(data, convention)


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


def _model_info(model, identity: dict) -> dict:
    """What a leaderboard keeps about a model (RobustBench's model_info): its identity (``model_identity``) and
    its card, when it has one."""
    info = dict(identity)
    if isinstance(model, str) and model in get_host().registries["model"]:
        card = get_host().get("model", model).obj
        info.update(name=card.name, arch=card.arch, method=card.method, base_model=card.base_model,
                    paper=card.paper, threat_model=card.threat_model, published=card.metrics)
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
                 defense_params: dict | None = None, adaptive_params: dict | None = None, out=None, device=None,
                 batch_size: int = 64, seed: int = 0, weights: bool = True, progress: bool | None = None,
                 download: bool = False, adaptive: bool = True, counting: str | None = None,
                 overwrite: bool = False) -> dict:
    """Evaluate ``model`` (a zoo name, a VLM or a classifier) under ``protocol``; returns the run record.

    ``dataset``, ``n`` and ``counting`` override the protocol's (recorded as overrides); ``out`` is a
    folder. Each dataset is built with the protocol's preprocessing rule for it; the record holds the
    rules applied (``preprocess``, by dataset) and the counting convention (``counting``). Around a
    test-time defense, ``adaptive`` also runs its adaptive attacks (``adaptive_robust_acc`` and
    ``robust_acc:NAME`` per eps). ``overwrite`` lets the run replace the finished records of another
    configuration in ``out``.
    """
    protocol = get_protocol(protocol)
    check_destination(out, folder=True)
    if counting is not None and counting not in COUNTINGS:
        raise ParameterError(f"counting must be one of {', '.join(COUNTINGS)}; got {counting!r}.")
    overrides = {k: v for k, v in (("datasets", _names(dataset)), ("n", n)) if v is not None}
    if counting is not None and counting != protocol.counting:
        overrides["counting"] = counting
    n = protocol.n if n is None else n
    counting = protocol.counting if counting is None else counting
    vlm, identity = resolve_model(model, resolve_device(device), weights)
    info = _model_info(model, identity)
    if not weights:
        info["weights"] = "random (smoke run)"
    defense_obj = resolve_defense(defense, defense_params)
    spec = dataset if dataset is not None else protocol.datasets
    if not spec:
        raise ParameterError(f"protocol {protocol.name!r} names no datasets; give some.")
    image_size = input_size(vlm)
    built = [_with_templates(d, protocol.templates)
             for d in protocol_datasets(protocol, spec, image_size=image_size, download=download)]
    out = Path(out) if out is not None else None
    started, clock = datetime.now(timezone.utc), time.perf_counter()

    def one(setting: str | None) -> dict:
        if setting is None:
            where, attack = "clean.json", {}
        elif protocol.eps:
            where, attack = f"eps-{_slug(setting)}.json", {"attack": protocol.attack, "eps": parse_eps(setting),
                                                           "steps": protocol.steps}
        else:
            where, attack = f"trigger-{_slug(setting)}.json", {"attack": setting}
        if attack:
            attack["attack_params"] = dict(protocol.attack_params) or None
        return evaluate(vlm, built, evaluator=protocol.evaluator, **attack, defense=defense_obj, n=n,
                        batch_size=batch_size, seed=seed, device=device, out=None if out is None else out / where,
                        progress=progress, adaptive=adaptive, adaptive_params=adaptive_params, counting=counting,
                        overwrite=overwrite)

    settings = protocol.settings()
    records = [one(setting) for setting in settings] or [one(None)]
    results, average, skipped = _combine(protocol, built, settings, records)
    metric, direction = protocol.ranking()
    if metric not in average and f"{PARTS[-1]}:{metric}" in average:  # domain pairs: ranked on the target
        metric = f"{PARTS[-1]}:{metric}"
    record = {
        "record": "protocol-run", "protocol": protocol.config(), "overrides": overrides, "model": info,
        "defense": defense_obj.config() if defense_obj else None,
        "test_time_defense": isinstance(defense_obj, TestTimeDefense),
        "datasets": [d.name for d in built], "n": n, "seed": seed, "counting": counting,
        "preprocess": {d.name: d.preprocess for d in built}, "results": results, "average": average,
        "skipped": skipped, "rank_by": [metric, direction],
        "flags": _unique([f for r in records for f in r["flags"]]), "evaluations": [r["attack"] for r in records],
        "adaptive_attacks": records[0].get("adaptive_attacks", []),
        "provenance": {**{k: v for k, v in records[0]["provenance"].items() if k != "attack"},
                       "attacks": {r["attack"]["name"]: r["provenance"]["attack"] for r in records if r["attack"]}},
        "environment": environment(), "plugins": records[0]["plugins"],
        "started_at": started.isoformat(timespec="seconds"), "resumed": any(r["resumed"] for r in records),
        "wall_time_s": round(max(time.perf_counter() - clock, sum(r["wall_time_s"] for r in records)), 3),
    }
    if out is not None and is_main_process():
        atomic_write_json(out / "run.json", record)
    return record


#: The fields of a dataset's result that describe it rather than measure it.
_INFO = ("n", "num_classes", "templates", *(f"{part}:n" for part in PARTS))


def _combine(protocol: Protocol, built: list, settings: tuple[str, ...], records: list[dict]) -> tuple:
    """(results, average, skipped) of a run from its evaluation records, one per setting (one, without a
    setting, for a protocol without attack).

    Per dataset: the evaluator's metrics that do not depend on the attack (``once``) as one value, from
    the first evaluation (the same seeded subset in each), and every other metric the evaluations
    measured (the evaluator's, then the adaptive attacks') as {setting: value}; a domain pair's prefixed
    by part. ``average`` is the mean over datasets of each; ``skipped`` the datasets an evaluation skipped,
    with the reason."""
    metrics = protocol.metrics()
    once, declared = metrics["once"], [*metrics["once"], *metrics["per_setting"]]
    runs = list(zip(settings, records, strict=True)) if settings else [(None, records[0])]
    skipped = {name: reason for _, r in runs for name, reason in r["skipped"].items()}
    measured = list(dict.fromkeys(m for _, r in runs for m in r["metrics"]))
    results, is_once = {}, {}
    for data in built:
        done = [r["results"][data.name] for _, r in runs if data.name in r["results"]]
        if not done:
            continue
        prefixes = [f"{part}:" for part in PARTS] if isinstance(data, DomainPair) else [""]
        names = dict.fromkeys([*(p + m for p in prefixes for m in declared),
                               *(m for m in measured if any(m in result for result in done))])
        result = {k: v for k, v in done[0].items() if k in _INFO}
        for metric in names:
            is_once[metric] = unprefixed(metric) in once
            result[metric] = done[0].get(metric) if is_once[metric] else {
                s: r["results"].get(data.name, {}).get(metric) for s, r in runs if s is not None}
        results[data.name] = result
    average = {m: mean_of([r.get(m) for r in results.values() if m in r]) if is_once[m] else
               {s: mean_of([r[m][s] for r in results.values() if m in r]) for s in settings} for m in is_once}
    return results, average, skipped


def _unique(flags: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for entry in flags:
        key = (entry["flag"], entry.get("dataset"), entry["detail"])
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


#: How a card names the metrics it keeps (the others by their own names).
CARD_NAMES = {"clean_acc": "clean", "robust_acc": "robust"}


def card_metrics_of(run: dict) -> dict:
    """A card's ``metrics`` from a run record: the protocol (every parameter), and for each metric
    (``clean``, ``robust``, ``asr``, ...) its values per dataset (``{setting: {dataset: value}}`` for one
    measured per setting) and their mean (``NAME_mean``)."""
    metrics = {"protocol": run["protocol"]}
    for metric, mean in run["average"].items():
        values = {d: r.get(metric) for d, r in run["results"].items()}
        if isinstance(mean, dict):
            values = {s: {d: (v or {}).get(s) for d, v in values.items()} for s in mean}
        part, _, base = metric.rpartition(":")  # a domain pair's "target:clean_acc" is "target:clean"
        name = f"{part}:{CARD_NAMES.get(base, base)}" if part else CARD_NAMES.get(metric, metric)
        metrics.update({name: values, f"{name}_mean": mean})
    return metrics


def measure_for_card(vlm: VLM, protocol="world", *, dataset=None, progress=None, out=None) -> dict:
    """A card's ``metrics`` (``card_metrics_of``), measured with ``run_protocol`` (resumable in ``out``) on the
    protocol's datasets, or on ``dataset`` (recorded as an override)."""
    return card_metrics_of(run_protocol(vlm, get_protocol(protocol), dataset, progress=progress, out=out))
