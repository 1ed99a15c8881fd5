"""vlmshield's own subcommands, a built-in plugin: ``plugins``, ``list``, ``info``, ``eval``, ``train``,
``leaderboard``, ``report`` and ``publish``."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from vlmshield.api import (
    KINDS,
    Command,
    Registration,
    UnknownNameError,
    UsageError,
    canonical_name,
    defense_params,
    did_you_mean,
    eps_note,
    evaluate,
    format_eps,
    format_run,
    format_table,
    get_host,
    hookimpl,
    init_from_env,
    is_main_process,
    parse_eps,
    parse_params,
    plugin_hint,
    progress_flag,
    resumable,
    signature_defaults,
    zoo,
)


# ------------------------------------------------------------------- describing
def _params(cls) -> dict:
    return {k: (format_eps(v) if k in getattr(cls, "pixel_params", ()) and isinstance(v, float) else v)
            for k, v in signature_defaults(cls).items() if not callable(v)}


def describe(registration: Registration) -> dict:
    """A JSON-able description of anything registered; ``contested_with`` names the other distributions that
    claim one of its names, when any does."""
    obj = registration.obj
    info = {"kind": registration.kind, "name": registration.name, "aliases": list(registration.aliases),
            "plugin": registration.plugin, "distribution": registration.distribution,
            "version": registration.version}
    rivals = get_host().registries[registration.kind].rivals(registration)
    if rivals:
        info["contested_with"] = [rival.origin for rival in rivals]
        info["qualified_name"] = f"{registration.qualifier}:{registration.name}"
    if inspect.isclass(obj):
        info["description"] = obj.description
        info["class"] = f"{obj.__module__}.{obj.__qualname__}"
        info["params"] = _params(obj)
        for attribute in ("defense_kind", "trainer", "takes", "paper", "adaptive", "randomized", "adaptive_attacks",
                          "metrics"):
            if hasattr(obj, attribute):
                value = getattr(obj, attribute)
                info[attribute] = list(value) if isinstance(value, tuple) else value
        if registration.kind == "attack":
            info["attack_kind"] = ("backdoor" if not hasattr(obj, "perturb")
                                   else "adaptive" if getattr(obj, "adaptive", False) else "evasion")
    elif registration.kind == "model":
        info.update({k: v for k, v in obj.to_dict().items() if k != "name"})
    elif registration.kind == "dataset":
        info.update(description=obj.description, needs_root=obj.needs_root, splits=list(obj.splits),
                    homepage=obj.homepage)
    elif registration.kind == "protocol":
        info.update({k: v for k, v in obj.config().items() if k != "name"})
    elif registration.kind == "command":
        info["description"] = obj.help
    elif registration.kind == "model-source":
        info["description"] = obj.description
    return info


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------- commands
def _plugins(args) -> int:
    infos = get_host().plugins()
    if args.json:
        _print_json([info.to_dict() for info in infos])
        return 0
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else "registered in-process"
        print(f"{info.name}  ({origin}{', built-in' if info.builtin else ''})")
        print(f"  hooks: {', '.join(info.hooks) or 'none'}")
        for kind, names in info.registered.items():
            print(f"  {kind}s: {', '.join(names)}")
        for kind, names in info.contested.items():
            print(f"  contested {kind}s: {', '.join(_claimed_also(kind, name, info.name) for name in names)}")
        for error in info.errors:
            print(f"  error: {error}")
        if args.show_tracebacks or getattr(args, "debug", False):
            for trace in info.tracebacks:
                print("  " + trace.rstrip().replace("\n", "\n  "))
    return 0


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", dest="show_tracebacks", action="store_true",
                        help="print the traceback of each plugin's error")
    _json_flag(parser)


def _claimed_also(kind: str, name: str, plugin: str) -> str:
    """'NAME (also claimed by DIST VERSION)' for a contested name of ``plugin``."""
    claimants = get_host().registries[kind].contested()[name]
    return f"{name} (also claimed by {', '.join(r.origin for r in claimants if r.plugin != plugin)})"


def _kind(text: str) -> str:
    kind = canonical_name(text).removesuffix("s")
    if kind not in KINDS:
        raise UsageError(f"cannot list {text!r}; choose one of {', '.join(k + 's' for k in KINDS)}.")
    return kind


def _list(args) -> int:
    kind = _kind(args.kind)
    rows = every = [describe(r) for r in get_host().registries[kind]]
    for key in ("method", "arch"):
        if getattr(args, key) is not None:
            if kind != "model":
                raise UsageError(f"--{key} only applies to `vlmshield list models`.")
            known = sorted({canonical_name(r[key]) for r in every})
            wanted = canonical_name(getattr(args, key))
            if wanted not in known:
                raise UsageError(f"no model has the {key} {getattr(args, key)!r}.{did_you_mean(wanted, known)} "
                                 f"See `vlmshield list models`.")
            rows = [r for r in rows if canonical_name(r[key]) == wanted]
    if args.json:
        _print_json(rows)
        return 0
    width = max((len(r["name"]) for r in rows), default=0)
    for row in rows:
        sort = row.get("attack_kind") or row.get("defense_kind")  # evasion, adaptive, backdoor; finetune, ...
        print(f"{row['name']:<{width}}  {f'({sort}) ' if sort else ''}{row.get('description', '')}  "
              f"[{row['plugin']}]{_contested_note(row)}")
    return 0


def _contested_note(row: dict) -> str:
    """'  contested with DIST VERSION: ask for DIST:NAME' for a contested entry of `vlmshield list`, else ''."""
    if "contested_with" not in row:
        return ""
    return f"  contested with {', '.join(row['contested_with'])}: ask for {row['qualified_name']}"


def _info(args) -> int:
    host = get_host()
    kinds = KINDS if args.kind is None else (_kind(args.kind),)
    found = [describe(host.get(kind, args.name)) for kind in kinds if args.name in host.registries[kind]]
    if not found:
        bare = args.name.partition(":")[2]
        for kind in kinds:
            if bare and bare in host.registries[kind]:
                host.get(kind, args.name)  # DIST:NAME whose DIST does not register NAME: raises, naming those that do
        known = [name for kind in kinds for name in host.registries[kind].names()]
        hint = plugin_hint(args.name) or did_you_mean(canonical_name(args.name), known)
        raise UnknownNameError(f"nothing is registered as {args.name!r}.{hint}")
    if args.json:
        _print_json(found[0] if len(found) == 1 else found)
        return 0
    for info in found:
        print(f"{info['kind']} {info['name']}")
        for key, value in info.items():
            if key not in ("kind", "name") and value not in (None, "", [], {}):
                print(f"  {key}: {value}")
    return 0


def _eval(args) -> int:
    host = get_host()
    eps = None
    if args.eps is not None and args.attack is None and args.protocol is None:
        raise UsageError("--eps needs --attack.")
    if args.eps is not None:
        eps = parse_eps(args.eps)
        note = eps_note(args.eps)
        if note:
            print(f"vlmshield: {note}", file=sys.stderr)
    attack_params = None
    if args.attack_params:
        if args.attack is None:
            raise UsageError("--attack-params needs --attack.")
        cls = host.get("attack", args.attack).obj
        attack_params = parse_params(cls, args.attack_params, f"attack {cls.name!r}", cls.pixel_params)
    if args.protocol is None and args.dataset is None:
        raise UsageError("give --dataset (or --protocol, which names its datasets).")
    adaptive_params = _adaptive_params(args)
    init_from_env()
    common = dict(defense=args.defense, defense_params=defense_params(args), n=args.n, batch_size=args.batch_size,
                  seed=args.seed, device=args.device, weights=not args.no_weights, out=args.out,
                  progress=progress_flag(args), download=args.download, adaptive=not args.no_adaptive,
                  adaptive_params=adaptive_params, overwrite=args.overwrite)
    if args.protocol is not None:
        if args.attack or args.eps or args.steps or args.attack_params or args.evaluator != "zero-shot":
            raise UsageError("--protocol fixes the attack, eps, steps and evaluator; drop those options.")
        record = resumable(args.out, lambda: evaluate(args.model, args.dataset, protocol=args.protocol, **common))
    else:
        record = resumable(args.out, lambda: evaluate(
            args.model, args.dataset, evaluator=args.evaluator, attack=args.attack, eps=eps, steps=args.steps,
            attack_params=attack_params, num_workers=args.workers, **common))
    if not is_main_process():
        return 0
    if args.json:
        _print_json(record)
    else:
        print(format_run(record) if args.protocol else format_table(record))
        if args.out:
            print(f"record: {Path(args.out) / 'run.json' if args.protocol else args.out}")
    return 0


def _adaptive_params(args) -> dict | None:
    """``--adaptive-params``, each value read with the type of the parameter in the defense's adaptive attacks
    that take it."""
    if not args.adaptive_params:
        return None
    if args.defense is None:
        raise UsageError("--adaptive-params sets the adaptive attacks of a test-time defense; give --defense.")
    host, params = get_host(), {}
    for name in host.get("defense", args.defense).obj.adaptive_attacks:
        cls = host.get("attack", name).obj
        chosen = ",".join(item for item in args.adaptive_params.split(",")
                          if item.split("=")[0].strip() in signature_defaults(cls))
        params.update(parse_params(cls, chosen, f"adaptive attack {cls.name!r}", cls.pixel_params))
    unknown = {item.split("=")[0].strip() for item in args.adaptive_params.split(",") if item.strip()} - set(params)
    if unknown:
        raise UsageError(f"no adaptive attack of {args.defense} takes {', '.join(sorted(unknown))}.")
    return params


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo name (see `vlmshield list models`)")
    parser.add_argument("--protocol", help="a named protocol (tecoa, robustvlm, clean, world; `vlmshield list "
                                           "protocols`): fixes attack, eps, steps, n and prompts")
    parser.add_argument("--dataset", help="NAME or NAME:/root; several separated by commas (a protocol's own "
                                          "datasets by default)")
    parser.add_argument("--download", action="store_true", help="let datasets fetch missing files (torchvision)")
    parser.add_argument("--evaluator", default="zero-shot", help="zero-shot (default), accuracy, asr, ...")
    parser.add_argument("--attack", help="attack name (see `vlmshield list attacks`), a backdoor trigger with "
                                         "--evaluator asr; none: clean only")
    parser.add_argument("--eps", help="budget: 4/255, 0.0157, or 4 (a bare number above 1 is 255ths)")
    parser.add_argument("--steps", type=int, help="attack iterations (the attack's default otherwise)")
    parser.add_argument("--attack-params", help="more attack parameters: key=value,key=value")
    parser.add_argument("--defense", help="a test-time defense to wrap the classifier in")
    parser.add_argument("--defense-params", help="defense parameters: key=value,key=value")
    parser.add_argument("--adaptive-params", help="with a test-time defense: its adaptive attacks' parameters, "
                                                  "key=value,key=value (eot=8, steps=50, ...)")
    parser.add_argument("--no-adaptive", action="store_true",
                        help="with a test-time defense: skip its adaptive attacks (reported beside by default)")
    parser.add_argument("--n", "--n-samples", dest="n", type=int,
                        help="samples per dataset (a seeded subset; all by default); under torchrun write --n-samples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes")
    parser.add_argument("--no-weights", action="store_true",
                        help="build the architecture with random weights (no download): a smoke run")
    parser.add_argument("--out", help="write the JSON record here (with --protocol: a folder); an interrupted "
                                      "run resumes from it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished record of another configuration at --out (refused otherwise)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    parser.add_argument("--no-progress", action="store_true")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help=", ".join(k + "s" for k in KINDS))
    parser.add_argument("--method", help="models only: those of this method (none for the vanilla ones)")
    parser.add_argument("--arch", help="models only: those of this architecture")
    _json_flag(parser)


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--kind", help="only this kind (model, attack, ...) when a name is used by several")
    _json_flag(parser)


def _publish(args) -> int:
    result = zoo.publish(args.directory, args.repo_id, revision=args.revision, private=args.private,
                         create_pr=args.create_pr, dry_run=args.dry_run)
    if args.json:
        _print_json(result)
        return 0
    print(("would upload" if args.dry_run else "uploaded") + f" {result['name']} to {args.repo_id}:")
    for file in result["files"]:
        print(f"  {file['path']}  {file['bytes']} bytes  sha256 {file['sha256']}")
    if not args.dry_run:
        print(f"commit {result['revision']}: pin it as hf-hub:{args.repo_id}@{result['revision']}")
    return 0


def _publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a model folder written by vs.zoo.save")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hugging Face Hub")
    parser.add_argument("--revision", help="branch to commit to (default: main)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    _json_flag(parser)


def _new_plugin(args) -> int:
    from .scaffold import new_plugin

    out = new_plugin(args.name, args.kind, args.out)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"  wrote {path}")
    print(f"next: pip install -e '{out}[test]' && pytest {out}    (then edit src/, the tests and the README's card)")
    return 0


def _new_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    from .scaffold import KINDS

    parser.add_argument("name", help="the plugin's name: the distribution is vlmshield-NAME")
    parser.add_argument("--kind", required=True, choices=KINDS, help="what the plugin registers")
    parser.add_argument("--out", help="the folder to write (default: ./vlmshield-NAME; new or empty)")


COMMANDS = (
    Command("plugins", "list loaded plugins, what they registered, and load errors", _plugins, _plugins_arguments),
    Command("list", "list registered models, attacks, defenses, datasets, evaluators or commands", _list,
            _list_arguments),
    Command("info", "show everything about one registered name", _info, _info_arguments),
    Command("eval", "clean and robust accuracy of a model on datasets", _eval, _eval_arguments),
    Command("publish", "upload a saved model folder to the Hugging Face Hub in one commit", _publish,
            _publish_arguments),
    Command("new-plugin", "write a plugin distribution to start from (tests and conformance checks included)",
            _new_plugin, _new_plugin_arguments),
)


@hookimpl
def register_commands(register):
    from .leaderboard import COMMANDS as LEADERBOARD
    from .train import COMMANDS as TRAIN

    register(*COMMANDS, *TRAIN, *LEADERBOARD)


