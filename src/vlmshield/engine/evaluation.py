"""The evaluation engine: clean and robust numbers of a model on one or more datasets.

``evaluate(model, dataset, attack=..., eps=..., n=...)`` draws a seeded subset of ``n`` samples of
each dataset, builds the evaluator's classifier (a zero-shot head for a VLM), optionally wraps it in a
test-time defense, and scores it batch by batch. Each batch has its own seed derived from the run's
seed, so its numbers do not depend on which batches ran before it; with ``out=...`` every finished
batch is logged, an interrupted run resumes where it stopped, and the record (the full configuration,
the numbers per dataset and their average, versions) is written atomically at the end.

Under torchrun (``torchrun --nproc_per_node N vlmshield eval ...``) each process scores every N-th
batch of each dataset and the per-batch values are gathered on every process: since a batch's seed
depends only on its index, the numbers are those of one process. Each process keeps its own log of
finished batches (``OUT.rankR-of-N.partial``); the first process writes the record.

Against a test-time defense, a non-adaptive attack is crafted on the undefended classifier and the
defended one classifies the result (the protocol of the TTC paper); attacks marked ``adaptive`` see
the defended classifier. Beside a non-adaptive number, the defense's own adaptive attacks
(``adaptive_attacks``, e.g. ``bpda-eot``) run with the same eps, steps and step size, each reported as
``robust_acc:NAME``, and ``adaptive_robust_acc`` counts the images that survive all of them and the
non-adaptive attack too (an adaptive attacker may also transfer); ``adaptive=False`` skips them, and
``adaptive_params`` sets their other parameters (``eot``, ...). Against a defense that declares no
randomness (``randomized = False``) an EOT attack takes one draw per step: more give the same gradient. A
defense that asks for clean calibration images receives a seeded sample of the dataset, disjoint from
the evaluated subset when the dataset has enough images left.

Counting (``counting=``), which images robust accuracy counts:

- ``"clean-correct"`` (the default; AutoAttack, RobustBench, RobustVLM): only the images the (defended)
  classifier gets right on the clean input are attacked, and robust accuracy is the share of all images
  that are right on the clean input and stay right under the attack, so it never exceeds clean accuracy;
- ``"all"`` (TeCoA, PMG-AFT, TTC): every image is attacked and robust accuracy is the share of all images
  classified right after the attack. A test-time defense may classify an image right after the attack
  that it gets wrong clean, so its robust accuracy may exceed its clean accuracy.

A backdoor attack (a trigger, with the ``asr`` evaluator) has no adaptive variant: against a test-time
defense the defended classifier sees the triggered images, and no adaptive attack runs.

Datasets the evaluator cannot score (``Evaluator.applies_to``: ``asr`` on a task whose classes do not
contain the backdoor's target) are skipped, each with its reason in the record's ``skipped``; when none
is left, the evaluation is refused. A domain pair (``DomainPair``) is evaluated on its labelled source
and its labelled target test set, ``n`` images of each: its result holds every metric of each part
prefixed by the part, ``source:clean_acc``, ``target:robust_acc``, ..., and ``source:n``, ``target:n``,
beside ``n``, the images of both.

The convention is part of the record and of the resume fingerprint, so a resumed run never mixes them.
The ``robust-above-clean`` flag (a sign of a broken attack or evaluation) is raised under both, except
for a non-adaptive attack on a test-time defense counted over all images: there the attack is crafted
on the undefended classifier and the defense reacts to what it did (TTC counterattacks the images that
look attacked), so robust above clean is what the defense does, not a fault of the evaluation; that
number is marked by the ``test-time-defense`` flag when no adaptive attack ran beside it.

An evaluator that needs the whole evaluated subset at once (``Evaluator.whole_set``: ``retrieval`` ranks
every image against every caption of the subset) gets it as one batch, its classifier built with the
subset's indices. Image-caption pairs reach ``score`` as (images, captions), the captions a list with one
entry per image (a string, or a tuple of an image's several captions); they have no gradient checks.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from datetime import datetime, timezone
from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..core import (
    COUNTINGS,
    Attack,
    CaptionedImages,
    DomainPair,
    Evaluator,
    LabelledImages,
    ParameterError,
    TestTimeDefense,
    check_takes,
    derive_seed,
    format_eps,
    get_host,
    input_size,
    load_model,
    model_identity,
)
from ..core.data import datasets as build_datasets
from ..core.params import signature_defaults
from .distributed import gather_objects, is_main_process, rank_and_world, resolve_device
from .records import RunLog, atomic_write_json, check_destination, check_overwrite, environment, fingerprint
from .sanity import check_classifier, check_results, flag, format_flag


def resolve_model(model, device, weights: bool) -> tuple[nn.Module, dict]:
    """(the model, what the record says about it: ``model_identity`` and whether its weights were loaded) of
    a model name or module."""
    if isinstance(model, str):
        model = load_model(model, device=device, weights=weights)
    elif isinstance(model, nn.Module):
        model = model.to(device)
    else:
        raise ParameterError(f"model must be a zoo name or a torch module; got {type(model).__name__}.")
    return model, {**model_identity(model), "weights": weights}


def _attack(attack, evaluator: Evaluator, eps, steps, params: dict | None):
    overrides = {k: v for k, v in (("eps", eps), ("steps", steps)) if v is not None}
    if attack is None or (isinstance(attack, str) and attack.lower() == "none"):
        if overrides or params:
            raise ParameterError("eps, steps and attack parameters need an attack (--attack NAME).")
        if evaluator.needs_attack:
            raise ParameterError(f"the {evaluator.name} evaluator needs an attack.")
        return None
    twice = sorted(set(overrides) & set(params or {}))
    if twice:
        raise ParameterError(f"{' and '.join(twice)} given twice (as their own options and among the attack "
                             f"parameters); give each once.")
    if isinstance(attack, str):
        attack = get_host().create("attack", attack, **{**(params or {}), **overrides})
    elif overrides or params:
        raise ParameterError("give eps, steps and parameters when naming the attack, or set them on the attack object.")
    if evaluator.attack_type is None or not isinstance(attack, evaluator.attack_type):
        wanted = f"a {evaluator.attack_type.__name__}" if evaluator.attack_type else "no attack"
        raise ParameterError(f"the {evaluator.name} evaluator takes {wanted}; {attack.name!r} is not one.")
    return attack


def resolve_defense(defense, params: dict | None):
    """The test-time defense ``defense`` names (or is), or None."""
    if defense is None or (isinstance(defense, str) and defense.lower() == "none"):
        if params:
            raise ParameterError("defense parameters need a defense (--defense NAME).")
        return None
    if isinstance(defense, str):
        defense = get_host().create("defense", defense, **(params or {}))
    if not isinstance(defense, TestTimeDefense):
        raise ParameterError(
            f"defense {defense.name!r} is a {defense.defense_kind} defense: it produces a model, "
            f"and that model is what to evaluate (--defense takes test-time defenses)."
        )
    return defense


def provenance(evaluator, attack, adaptive_attacks, defense, datasets) -> dict:
    """The plugin distribution (and version) that provided each component of a run besides the model (whose
    provider its identity holds)."""
    host = get_host()
    found = {"evaluator": host.provider_of("evaluator", evaluator),
             "datasets": {d.name: getattr(d, "provider", None) for d in datasets}}
    if attack is not None:
        found["attack"] = host.provider_of("attack", attack)
    if adaptive_attacks:
        found["adaptive_attacks"] = {a.name: host.provider_of("attack", a) for a in adaptive_attacks}
    if defense is not None:
        found["defense"] = host.provider_of("defense", defense)
    return found


#: The most data loading processes an evaluation starts (``num_workers``): more only exhausts memory.
MAX_WORKERS = max(32, 4 * (os.cpu_count() or 1))


#: The labelled parts of a domain pair that are evaluated, as their metrics are prefixed ("source:clean_acc").
PARTS = ("source", "target")


def unprefixed(metric: str) -> str:
    """A metric without the domain-pair part it was measured on: ``target:robust_acc`` -> ``robust_acc``."""
    part, _, rest = metric.partition(":")
    return rest if part in PARTS else metric


def _part(pair: DomainPair, part: str) -> LabelledImages:
    """The labelled ``part`` of ``pair`` (its source, or its target test set), named ``PAIR:PART``."""
    data = copy.copy(pair.source if part == "source" else pair.target_test)
    data.name = f"{pair.name}:{part}"
    return data


def _pair_result(parts: dict[str, dict]) -> dict:
    """One domain pair's result from its parts' results: each part's fields prefixed by the part."""
    first = parts[PARTS[0]]
    merged = {"n": sum(r["n"] for r in parts.values()), "num_classes": first["num_classes"],
              "templates": first["templates"]}
    for part, result in parts.items():
        merged.update({f"{part}:{k}": v for k, v in result.items()
                       if k not in ("num_classes", "templates", "metrics", "flags")})
    merged["metrics"] = [f"{part}:{m}" for part, r in parts.items() for m in r["metrics"]]
    merged["flags"] = [f for r in parts.values() for f in r["flags"]]
    return merged


def _adaptive_attacks(defense, attack, enabled: bool, params: dict | None = None) -> list[Attack]:
    """The defense's adaptive attacks, with the non-adaptive attack's budget, steps and step size (none
    beside a backdoor trigger, which has no adaptive variant), one EOT draw against a defense that declares
    no randomness (more draws of a deterministic defense give the same gradient), and then ``params``, the
    user's, for each attack that takes them."""
    if not enabled or defense is None or not isinstance(attack, Attack) or attack.adaptive:
        return []
    host, attacks, params = get_host(), [], params or {}
    unused = set(params) - {k for name in defense.adaptive_attacks
                            for k in signature_defaults(host.get("attack", name).obj)}
    if unused:
        raise ParameterError(f"no adaptive attack of {defense.name} ({', '.join(defense.adaptive_attacks)}) takes "
                             f"{', '.join(sorted(unused))}.")
    for name in defense.adaptive_attacks:
        accepted = signature_defaults(host.get("attack", name).obj)
        shared = {k: v for k, v in attack.params.items() if k in ("eps", "steps", "alpha", "norm") and k in accepted}
        if "alpha" in accepted and "alpha" not in shared and "eps" in shared:
            shared["alpha"] = shared["eps"] / 4
        if "eot" in accepted and not defense.randomized:
            shared["eot"] = 1
        shared.update({k: v for k, v in params.items() if k in accepted})
        attacks.append(host.create("attack", name, **shared))
    return attacks


def _calibration(defense, data, indices: list[int], seed: int, device) -> tuple[torch.Tensor | None, dict | None]:
    """Clean images the defense calibrates on: outside the evaluated subset when enough are left."""
    size = defense.calibration_size() if defense is not None else 0
    if not size:
        return None, None
    chosen = set(indices)
    pool = [i for i in range(len(data)) if i not in chosen]
    disjoint = len(pool) >= size
    pool = pool if disjoint else list(range(len(data)))
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(derive_seed(seed, data.name, "calib")))
    picked = [pool[i] for i in order[:size].tolist()]
    images = torch.stack([data[i][0] for i in picked]).to(device)
    return images, {"n": len(picked), "disjoint": disjoint}


def subset_indices(size: int, n: int | None, seed: int) -> list[int]:
    """The sorted indices of a seeded random subset of ``n`` of ``size`` samples (all when n is None)."""
    if n is None or n >= size:
        return list(range(size))
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:n].tolist())


def mean_of(values: list) -> float | None:
    """The mean of the values that count (not None, not NaN), or None."""
    counted = [v for v in values if v is not None and not math.isnan(v)]
    return sum(counted) / len(counted) if counted else None


def evaluate(model, dataset=None, *, protocol=None, evaluator: str | Evaluator = "zero-shot", attack=None, eps=None,
             steps: int | None = None, attack_params: dict | None = None, defense=None,
             defense_params: dict | None = None, adaptive_params: dict | None = None, n: int | None = None,
             batch_size: int = 64, seed: int = 0,
             device=None, weights: bool = True, out=None, progress: bool | None = None,
             num_workers: int = 0, download: bool = False, adaptive: bool = True,
             counting: str | None = None, overwrite: bool = False) -> dict:
    """Evaluate ``model`` (a zoo name or a module) on ``dataset`` (a name, 'a,b,c', LabelledImages or DomainPairs).

    Returns the record: configuration, per-dataset numbers (fractions in [0, 1]) and their average, the
    metrics measured (``metrics``) and the datasets the evaluator skipped, with the reason
    (``skipped``, empty when it scored them all).
    ``protocol="robustvlm"`` runs a named protocol instead (``run_protocol``): it fixes the attack, eps,
    steps, n, prompts, preprocessing and counting, and ``dataset``, ``n`` and ``counting``, when given,
    are recorded as overrides. Against a test-time defense, ``adaptive`` (the default) also runs the
    defense's adaptive attacks. ``counting`` is "clean-correct" (the default) or "all": see the module
    docstring; the record holds it.

    The record names what ran: the model by its identity (``model_identity``: weights and config sha256,
    source, provider), the plugin distribution that provided every component (``provenance``) and the
    plugins loaded (``plugins``). With ``out``, a finished record of another configuration is not replaced
    unless ``overwrite``; an interrupted run of the same configuration resumes (``resumed`` in the record,
    ``wall_time_s`` over all its parts), and one of another model is refused.
    """
    if counting is not None and counting not in COUNTINGS:
        raise ParameterError(f"counting must be one of {', '.join(COUNTINGS)}; got {counting!r}.")
    check_destination(out, folder=protocol is not None)
    if protocol is not None:
        if attack is not None or eps is not None or steps is not None or attack_params:
            raise ParameterError("a protocol fixes the attack, eps and steps; give either a protocol or an attack.")
        from .protocol_runs import run_protocol  # the protocol runner builds on this function

        return run_protocol(model, protocol, dataset, n=n, defense=defense, defense_params=defense_params,
                            adaptive_params=adaptive_params, out=out, device=device, batch_size=batch_size,
                            seed=seed, weights=weights, progress=progress, download=download, adaptive=adaptive,
                            counting=counting, overwrite=overwrite)
    counting = COUNTINGS[0] if counting is None else counting
    if dataset is None:
        raise ParameterError("no dataset given: name one or several (or a protocol, which names its own).")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ParameterError(f"n must be a whole number of samples, 1 or more; got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ParameterError(f"seed must be a whole number from 0 to 2**63 - 1; got {seed!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch size must be 1 or more; got {batch_size!r}.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or not 0 <= num_workers <= MAX_WORKERS:
        raise ParameterError(f"data loading workers must be 0 (load in this process) to {MAX_WORKERS} (each is a "
                             f"process of its own); got {num_workers!r}.")
    if isinstance(evaluator, str):
        evaluator = get_host().create("evaluator", evaluator)
    device = resolve_device(device)
    attack = _attack(attack, evaluator, eps, steps, attack_params)
    if counting != COUNTINGS[0] and counting not in evaluator.countings:
        raise ParameterError(f"the {evaluator.name} evaluator has no counting convention {counting!r} "
                             f"(it takes: {', '.join(evaluator.countings) or COUNTINGS[0]}).")
    defense = resolve_defense(defense, defense_params)
    adaptive_attacks = _adaptive_attacks(defense, attack, adaptive, adaptive_params)
    model, model_info = resolve_model(model, device, weights)
    model.eval()
    image_size = input_size(model)
    datasets = [data if isinstance(data, DomainPair) else check_takes(data, evaluator.takes, f"the {evaluator.name} "
                                                                                            f"evaluator")
                for data in build_datasets(dataset, image_size=image_size, download=download)]
    skipped = {d.name: reason for d in datasets
               if (reason := evaluator.applies_to(d.source if isinstance(d, DomainPair) else d, attack))}
    if len(skipped) == len(datasets):
        raise ParameterError(f"the {evaluator.name} evaluator applies to none of the datasets ("
                             + "; ".join(f"{name}: {reason}" for name, reason in skipped.items()) + ").")

    config = {
        "model": model_info, "evaluator": evaluator.config(),
        "attack": attack.config() if attack else None, "defense": defense.config() if defense else None,
        **({"adaptive_attacks": [a.config() for a in adaptive_attacks]} if adaptive_attacks else {}),
        "datasets": [d.name for d in datasets], "n": n, "seed": seed, "batch_size": batch_size,
        "device": device.type, "counting": counting,
    }
    preprocess = {d.name: d.preprocess for d in datasets if getattr(d, "preprocess", None) is not None}
    if preprocess:  # the rules a protocol built the datasets with
        config["preprocess"] = preprocess
    config["provenance"] = provenance(evaluator, attack, adaptive_attacks, defense, datasets)
    config_fingerprint = fingerprint(config)
    rank, world = rank_and_world()
    log = None
    if out is not None:
        check_overwrite(out, config_fingerprint, overwrite)
        shard = {} if world == 1 else {"shard": [rank, world]}
        log = RunLog(out, fingerprint({**config, **shard}), part=f"rank{rank}-of-{world}" if shard else "",
                     model=model_info)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    results = {}
    one = partial(_evaluate_one, model, evaluator=evaluator, attack=attack, defense=defense, n=n,
                  batch_size=batch_size, seed=seed, device=device, log=log, progress=progress,
                  num_workers=num_workers, adaptive_attacks=adaptive_attacks, counting=counting)
    try:
        for data in (d for d in datasets if d.name not in skipped):
            results[data.name] = (_pair_result({p: one(_part(data, p)) for p in PARTS})
                                  if isinstance(data, DomainPair) else one(data))
    finally:
        if log is not None:
            log.close()
    metrics = list(dict.fromkeys(m for r in results.values() for m in r.get("metrics", ())))
    average = {m: mean_of([r[m] for r in results.values()]) for m in metrics if all(m in r for r in results.values())}
    for r in results.values():
        r.pop("metrics", None)
    flags = [f for r in results.values() for f in r.pop("flags", [])]
    robust = [m for m in average if unprefixed(m) == "robust_acc"]  # robust_acc, or each pair part's
    if attack is not None and robust:
        label = format_eps(attack.eps) if hasattr(attack, "eps") else attack.name
        # counted over all images, a test-time defense may be right after a non-adaptive attack where it
        # is wrong clean (module docstring): robust above clean is then no sign of a broken evaluation
        compared = not (counting == "all" and defense is not None and not getattr(attack, "adaptive", False))
        compared_results = {f"{name} ({m.partition(':')[0]})" if m != "robust_acc" else name:
                            {"clean_acc": r.get(m.replace("robust_acc", "clean_acc")),
                             "robust_acc": {label: r.get(m)} if compared else {}}
                            for name, r in results.items() for m in robust}
        flags += check_results(compared_results, defense, attack, adaptive_attacks)
    flags += [flag("n-above-size", f"n={n} asked, but the dataset has {r['n']} images: all of them were "
                        f"evaluated.", name) for name, r in results.items() if n is not None and r["n"] < n]
    record = {
        "record": "evaluation", **config, "processes": world, "metrics": metrics, "results": results,
        "average": average, "skipped": skipped, "flags": flags,
        "environment": environment(), "plugins": get_host().loaded_plugins(), "fingerprint": config_fingerprint,
        "started_at": started.isoformat(timespec="seconds"), "resumed": bool(log and log.resumed),
        "wall_time_s": round(log.elapsed() if log else time.perf_counter() - clock, 3),
    }
    if out is not None:
        if is_main_process():
            atomic_write_json(out, record)
        log.finish()
    return record


def _collate_captions(items: list) -> tuple[torch.Tensor, list]:
    """A batch of image-caption pairs: the images stacked, the captions (a string, or a tuple of an image's
    several captions) as a list, one entry per image."""
    return torch.stack([item[0] for item in items]), [item[1] for item in items]


def _evaluate_one(model, data, evaluator, attack, defense, n, batch_size, seed, device, log,
                  progress, num_workers, adaptive_attacks=(), counting: str = COUNTINGS[0]) -> dict:
    indices = subset_indices(len(data), n, seed)
    # a whole-set evaluator (retrieval) sees the evaluated subset at once: its classifier is built on it,
    # and the subset is one batch
    classifier = (evaluator.classifier(model, data, indices=indices) if evaluator.whole_set
                  else evaluator.classifier(model, data))
    calibration, calibration_info = _calibration(defense, data, indices, seed, device)
    if defense is None:
        defended = classifier
    else:
        defended = defense.wrap(classifier, calibration=calibration) if calibration is not None \
            else defense.wrap(classifier)
    attack_model = defended if attack is None or defense is None or getattr(attack, "adaptive", False) else classifier
    counted = {"counting": counting} if evaluator.countings else {}
    batches = [indices] if evaluator.whole_set else [indices[i:i + batch_size]
                                                     for i in range(0, len(indices), batch_size)]
    collate = _collate_captions if isinstance(data, CaptionedImages) else None
    rank, world = rank_and_world()
    mine = range(rank, len(batches), world)  # this process's share
    values = {b: log.get(data.name, b) for b in mine} if log else {}
    todo = [b for b in mine if values.get(b) is None]
    flags = []
    if indices:  # AutoAttack's checks, on a few clean images, before the attack (only finiteness without one)
        x, y = next(iter(DataLoader(data, batch_sampler=[indices[:8]], collate_fn=collate)))
        labelled = torch.is_tensor(y)  # captions have no gradient checks, only the finiteness one
        flags = check_classifier(defended, x.to(device), y.to(device) if labelled else y, data.name,
                                 attacked=isinstance(attack, Attack) and labelled, adaptive=bool(adaptive_attacks))
    loader = DataLoader(data, batch_sampler=[batches[b] for b in todo], num_workers=num_workers, collate_fn=collate)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=data.name, unit="batch",
               disable=(None if progress is None else not progress) or rank > 0, leave=False)
    devices = [device.index or 0] if device.type == "cuda" else []
    for b, (x, y) in zip(todo, loader, strict=True):
        batch_seed = derive_seed(seed, data.name, b)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed)
            x, y = x.to(device), y.to(device) if torch.is_tensor(y) else y
            scores = evaluator.score(defended, x, y, data=data, attack=attack, attack_model=attack_model,
                                     seed=batch_seed, **counted)
            for adaptive in adaptive_attacks:
                torch.manual_seed(batch_seed)  # the same draws of the defense's randomness on the clean images
                scores[f"robust_acc:{adaptive.name}"] = evaluator.score(
                    defended, x, y, data=data, attack=adaptive, attack_model=defended, seed=batch_seed,
                    **counted)["robust_acc"]
            if adaptive_attacks:  # an adaptive attacker may also transfer: the worst case of all
                scores["adaptive_robust_acc"] = torch.stack(
                    [scores["robust_acc"], *(scores[f"robust_acc:{a.name}"] for a in adaptive_attacks)]).amin(dim=0)
        values[b] = {m: [None if math.isnan(v) else v for v in t.tolist()] for m, t in scores.items()}
        if log is not None:
            log.put(data.name, b, values[b])
        bar.update()
    bar.close()
    values = {b: v for shard in gather_objects(values) for b, v in shard.items()}
    result: dict = {"n": len(indices)}
    if hasattr(data, "classnames"):  # image-caption pairs have neither
        result.update(num_classes=len(data.classnames), templates=len(data.templates))
    metrics = [*evaluator.metrics, *(f"robust_acc:{a.name}" for a in adaptive_attacks)]
    metrics += ["adaptive_robust_acc"] if adaptive_attacks else []
    result["metrics"] = [m for m in metrics if all(m in values[b] for b in values)]
    for metric in result["metrics"]:
        result[metric] = mean_of([v for b in sorted(values) for v in values[b][metric]])
    if calibration_info:
        result["calibration"] = calibration_info
    result["subset_sha256"] = hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]
    result["flags"] = flags
    return result


def format_skipped(record: dict) -> list[str]:
    """One line per dataset the evaluator skipped: ``skipped NAME: reason``."""
    return [f"skipped {name}: {reason}" for name, reason in record.get("skipped", {}).items()]


def format_table(record: dict) -> str:
    """The record's numbers as a Markdown table (percentages), one row per dataset and the average."""
    metrics = [m for m in ("clean_acc", "robust_acc", "asr") if m in record["average"]]
    metrics += [m for m in record["average"] if m not in metrics]
    header = "| dataset | n | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 2)]

    def cell(value):
        return "-" if value is None else f"{100 * value:.2f}"

    for name, result in record["results"].items():
        lines.append(f"| {name} | {result['n']} | " + " | ".join(cell(result.get(m)) for m in metrics) + " |")
    if len(record["results"]) > 1:
        lines.append("| **average** | | " + " | ".join(cell(record["average"].get(m)) for m in metrics) + " |")
    attack = record.get("attack")
    if attack:
        params = attack["params"]
        shown = ", ".join(f"{k}={format_eps(v) if k in ('eps', 'alpha') else v}" for k, v in params.items())
        lines.append(f"\nattack: {attack['name']} ({shown})")
    if record.get("defense"):
        lines.append(f"defense: {record['defense']['name']}")
    lines += format_skipped(record)
    lines += [format_flag(f) for f in record.get("flags", [])]
    return "\n".join(lines)
