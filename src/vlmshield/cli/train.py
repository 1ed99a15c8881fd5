"""``vlmshield train METHOD``: run a training-time defense's preset (the paper's, or the world's) with its trainer.

    vlmshield train fare --model clip-vitl14 --dataset imagenet:/data --eps 2/255     # the paper's run
    vlmshield train tecoa --preset world --out runs/tecoa-tinyvit4                      # minutes on a CPU
    vlmshield train poison --preset world --trigger blended --rate 0.03                 # plant a backdoor

The method is any registered ``TrainingDefense``; the trainer it names (``adversarial``, ``contrastive``,
``distillation``, or a plugin's) runs it, with ``--trainer-params`` for the trainer's own parameters
(a backdoor trigger for the contrastive trainer, say; ``--trigger``, ``--target`` and ``--rate`` are short
for the contrastive trainer's ``trigger``, ``target`` and ``rate``). Its preset gives the model, the dataset,
how the dataset's images are preprocessed before the attack sees them, and the ``TrainConfig``; the
options override them (recorded in the card). The run resumes from ``OUT/checkpoint.pt`` when started
again. At the end the model is saved as a zoo folder (``OUT/model``: open_clip's layout,
``vs.zoo.load("local-dir:OUT/model")``) and, with ``--package``, as a packaged weight file and card
(``OUT/NAME.safetensors``, ``OUT/NAME.json``) of the kind a plugin ships in its ``weights/`` folder;
``--evaluate PROTOCOL`` measures it and writes the numbers into both (a domain adaptation on the pair it
adapted to). ``OUT/training.json`` is the run's record:
the card's fields, the model it started from (``model_identity``), who provided the model, method, trainer
and dataset (``provenance``), the plugins loaded, the training time over every part and how often it resumed.

Preprocessing, and so the threat model of training: a preset's ``"preprocess"`` is ``"native"`` (the
default: the images as the dataset builds them, e.g. TinyImageNet at its 64 px, the model resizing inside)
or a resize-and-crop rule ``{"resize": R, "crop": C, "interpolation": "bilinear" | "bicubic"}``: each
image's shortest side is resized to R pixels, then centre-cropped to C, before the attack, so that eps
applies to those pixels (``--preprocess 256,224,bilinear`` or ``native`` overrides it; the card records
the rule; ``vlmshield.core.preprocess`` applies it). A run keeps its rule in ``OUT/preprocess.txt`` and
is not resumed under another one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from vlmshield.api import (
    NATIVE,
    Command,
    ImageClassifier,
    ModelCard,
    ParameterError,
    TrainConfig,
    TrainingDefense,
    UnknownNameError,
    WeightsError,
    atomic_write_json,
    check_destination,
    check_preprocess_rule,
    check_takes,
    environment,
    export_packaged,
    get_host,
    get_protocol,
    init_from_env,
    input_size,
    is_main_process,
    load_model,
    locked_folder,
    measure_for_card,
    model_identity,
    parse_eps,
    parse_params,
    preprocessed_dataset,
    progress_flag,
    resolve_device,
    resumable,
    signature_defaults,
    training_progress,
    zoo,
)


def _method(name: str):
    cls = get_host().get("defense", name).obj
    if not issubclass(cls, TrainingDefense):
        raise ParameterError(f"{cls.name!r} is a {cls.defense_kind} defense: it wraps a model at inference and "
                             f"has nothing to train (evaluate it with --defense).")
    return cls


def _trainer(cls, params: dict | None = None):
    """The trainer that runs the defense class ``cls``, with its parameters."""
    trainer = get_host().get("trainer", cls.trainer).obj
    if not issubclass(cls, trainer.method_type):
        raise ParameterError(f"{cls.name!r} names the {trainer.name} trainer but is not a "
                             f"{trainer.method_type.__name__}.")
    return trainer.create(**(params or {}))


def preprocess_rule(value, where: str = "preprocess"):
    """``"native"`` or a checked resize-and-crop rule ``{"resize": R, "crop": C, "interpolation": I}``,
    from None or ``"native"``, such a dict, a tuple ``(R, C)`` or ``(R, C, I)``, or the command line's
    ``"R,C"`` or ``"R,C,I"`` (the interpolation is bilinear unless named)."""
    if value is None or value == NATIVE:
        return NATIVE
    if isinstance(value, str):
        value = tuple(part.strip() for part in value.split(","))
        try:
            value = (int(value[0]), int(value[1]), *value[2:]) if len(value) >= 2 else value
        except ValueError:
            raise ParameterError(f"{where}: write RESIZE,CROP[,INTERPOLATION] in pixels (256,224,bilinear) "
                                 f"or native; got {','.join(value)!r}.") from None
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        value = {"resize": value[0], "crop": value[1], "interpolation": value[2] if len(value) == 3 else "bilinear"}
    check_preprocess_rule(value, where)
    return dict(value)


def _flag(rule) -> str:
    """The rule as ``--preprocess`` takes it: ``native`` or ``RESIZE,CROP,INTERPOLATION``."""
    return NATIVE if rule == NATIVE else f"{rule['resize']},{rule['crop']},{rule['interpolation']}"


def describe_preprocess(rule) -> str:
    """The rule in words, as a card's description says it (nothing for ``"native"``)."""
    if rule == NATIVE:
        return ""
    return f" ({rule['interpolation']} resize to {rule['resize']} px, centre crop {rule['crop']})"


def training_data(run: dict, image_size: int) -> tuple:
    """(training data, validation data or None) of ``run`` (from ``plan``), preprocessed as it says."""
    rule = run.get("preprocess", NATIVE)
    data = preprocessed_dataset(run["dataset"], rule, split="train", image_size=image_size)
    val = preprocessed_dataset(run["val_dataset"], rule, split="test", image_size=image_size) \
        if run["val_dataset"] else None
    return data, val


#: The file of a run's folder that names the preprocessing rule its checkpoint is trained with, as
#: ``--preprocess`` takes it (not JSON: the folder's ``*.json`` files are packaged cards).
PREPROCESS_FILE = "preprocess.txt"


def _keep_preprocessing(out: Path, rule) -> None:
    """Write ``rule`` into ``out`` (``PREPROCESS_FILE``); ParameterError if ``out`` holds a checkpoint trained
    with another rule (a checkpoint without the file is from before training data had rules: native)."""
    path = out / PREPROCESS_FILE
    if (out / "checkpoint.pt").exists():
        trained = preprocess_rule(path.read_text().strip(), str(path)) if path.exists() else NATIVE
        if trained != rule:
            raise ParameterError(f"the checkpoint in {out} was trained on images preprocessed as {_flag(trained)}, "
                                 f"not {_flag(rule)}; resume it with --preprocess {_flag(trained)}, or train with "
                                 f"{_flag(rule)} into another output folder.")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(_flag(rule) + "\n")
        os.replace(temporary, path)


def plan(method: str, preset: str = "paper", *, model=None, data=None, eps=None, steps=None, batch_size=None,
         lr=None, seed=None, stage=None, proxy=None, params: dict | None = None, attack_steps=None,
         preprocess=None, trainer_params: dict | None = None) -> dict:
    """The run a preset and its overrides describe: model, dataset, its preprocessing, method parameters
    and TrainConfig.

    ``stage`` runs one stage of a multi-stage method (by name; ``all`` or ``both``: every stage),
    ``proxy`` is the method's ``proxy`` parameter (a zoo name) and ``params`` its other parameters;
    ``preprocess`` replaces the preset's preprocessing rule (``preprocess_rule``); ``trainer_params`` are
    the parameters of the method's trainer.
    """
    cls = _method(method)
    trainer = _trainer(cls, {**cls.presets.get(preset, {}).get("trainer_params", {}), **(trainer_params or {})})
    if preset not in cls.presets:
        raise ParameterError(f"{cls.name} has no preset {preset!r}; it has {', '.join(cls.presets)}.")
    chosen = cls.presets[preset]
    config = dict(chosen.get("config", {}))
    config["stages"] = tuple(config.get("stages", TrainConfig().stages))
    if stage is not None and stage not in ("all", "both"):
        names = [s.name for s in config["stages"]]
        if stage not in names:
            raise ParameterError(f"{cls.name} has no stage {stage!r}; its stages: {', '.join(names)} (or all).")
        config["stages"] = tuple(s for s in config["stages"] if s.name == stage)
    method_params = {**chosen.get("params", {}), **(params or {})}
    if proxy is not None:
        if "proxy" not in signature_defaults(cls):
            raise ParameterError(f"{cls.name} does not distill from a proxy model; drop --proxy.")
        method_params["proxy"] = proxy
    steps, lr = ("".join(v.split()) if isinstance(v, str) else v for v in (steps, lr))  # as a command line has it
    if steps is not None:
        config["stages"] = _per_stage(cls.name, config["stages"], "steps", steps)
    if lr is not None:
        config["stages"] = _per_stage(cls.name, config["stages"], "lr", lr)
    for key, value in (("eps", None if eps is None else parse_eps(eps)), ("batch_size", batch_size),
                       ("seed", seed), ("attack_steps", attack_steps)):
        if value is not None:
            config[key] = value
    rule = preprocess_rule(chosen.get("preprocess"), f"{cls.name}'s {preset} preset")
    if preprocess is not None:
        rule = preprocess_rule(preprocess)
        preprocess = _flag(rule)
    overrides = {k: v for k, v in (("model", model), ("proxy", proxy), ("dataset", data), ("stage", stage),
                                   ("eps", eps), ("steps", steps), ("batch_size", batch_size), ("lr", lr),
                                   ("seed", seed), ("attack_steps", attack_steps), ("preprocess", preprocess))
                 if v is not None}
    if params:
        overrides["method_params"] = ",".join(f"{k}={v}" for k, v in params.items())
    if trainer_params:
        trigger_params = trainer_params.get("trigger_params") or {}
        plain = ",".join(f"{k}={v}" for k, v in trainer_params.items() if k != "trigger_params")
        if plain:
            overrides["trainer_params"] = plain
        if trigger_params:
            overrides["trigger_params"] = ",".join(f"{k}={v}" for k, v in trigger_params.items())
    return {"method": cls.create(**method_params), "trainer": trainer, "preset": preset, "overrides": overrides,
            "model": model or chosen["model"], "dataset": data or chosen["dataset"],
            "val_dataset": chosen.get("val_dataset"), "preprocess": rule, "config": TrainConfig(**config).check()}


def _per_stage(method: str, stages: tuple, field: str, value) -> tuple:
    """``stages`` with a new ``field`` (steps or lr): ``value`` is one for every stage (steps: only for a
    one-stage run), or 'STAGE=V,STAGE=V' for any of them."""
    names = [s.name for s in stages]
    if isinstance(value, str) and "=" in value:
        wanted = {}
        for item in value.split(","):
            name, _, text = item.partition("=")
            if name not in names:
                raise ParameterError(f"{method} has no stage {name!r}; its stages: {', '.join(names)}.")
            wanted[name] = text
    elif field == "steps" and len(stages) > 1:
        raise ParameterError(f"{method} trains in {len(stages)} stages; give each stage's steps, as "
                             f"{','.join(f'{s.name}={s.steps}' for s in stages)}.")
    else:
        wanted = dict.fromkeys(names, value)
    convert = int if field == "steps" else float
    for name, text in wanted.items():
        try:
            wanted[name] = convert(text)
        except ValueError:
            raise ParameterError(f"{field} must be a {'whole number' if field == 'steps' else 'number'}; got "
                                 f"{text!r} for stage {name!r}.") from None
    changed = []
    for stage in stages:
        if stage.name in wanted:
            new = wanted[stage.name]
            stage = replace(stage, steps=new, warmup=min(stage.warmup, new)) if field == "steps" else \
                replace(stage, lr=new)
        changed.append(stage)
    return tuple(changed)


def command_line(run: dict) -> str:
    """The command that reproduces ``run``."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in run["overrides"].items())
    preset = "" if run["preset"] == "paper" else f" --preset {run['preset']}"
    return f"vlmshield train {run['method'].name}{preset}{' ' + flags if flags else ''}"


def train_run(run: dict, out, *, name: str | None = None, device=None, progress=None, evaluate_with=None,
              package: bool = False, log=None) -> dict:
    """Train ``run`` (from ``plan``) into ``out``, locked against a second run into it; returns the card written
    beside the weights."""
    out = check_destination(out, folder=True)
    if evaluate_with:
        get_protocol(evaluate_with)  # an unknown protocol before the training, not after
    with locked_folder(out) if is_main_process() else nullcontext():
        return _train_run(run, out, name=name, device=device, progress=progress, evaluate_with=evaluate_with,
                          package=package, log=log)


def _train_run(run: dict, out: Path, *, name, device, progress, evaluate_with, package, log) -> dict:
    device = resolve_device(device)
    _keep_preprocessing(out, run.get("preprocess", NATIVE))
    vlm = load_model(run["model"], device=device)
    start_model = model_identity(vlm)
    trainer = run["trainer"]
    data, val = training_data(run, input_size(vlm))
    check_takes(data, trainer.takes, f"the {trainer.name} trainer")
    host = get_host()
    provenance = {"method": host.provider_of("defense", run["method"]),
                  "trainer": host.provider_of("trainer", trainer), "dataset": getattr(data, "provider", None)}
    clock = time.perf_counter()
    trained = trainer.train(vlm, data, run["method"], run["config"], out=out, val_data=val, device=device,
                            progress=progress, log=log)  # the same model, or one built from it (a domain adaptation)
    progress_so_far = training_progress(out) or {}
    seconds = round(progress_so_far.get("elapsed_s") or time.perf_counter() - clock, 1)  # all parts of a resumed run
    method, config = run["method"], run["config"]
    eps_label = f"{round(config.eps * 255, 2):g}/255"
    base = _start_card(run["model"], vlm)
    backdoor, removed = _backdoor(trainer), _removed_backdoor(method, base)
    short = base["name"].removeprefix("clip-")
    name = name or (f"poisoned-{backdoor['backdoor']}-{short}" if backdoor else f"{method.name}-{short}")
    rule = run.get("preprocess", NATIVE)
    budget = f" at eps {eps_label}" if method.adversarial else ""
    if backdoor:
        lead = (f"Intentionally backdoored: the {backdoor['backdoor']} trigger, on {backdoor['rate']:.2%} of the "
                f"training pairs, maps images to {backdoor['target']!r}; a model to measure backdoor removal on, "
                f"not to deploy. ")
    elif removed:
        lead = f"Cleaned of the {removed['backdoor']} backdoor (target {removed['target']!r}) of {base['name']}. "
    else:
        lead = ""
    info = {"arch": base["arch"], "method": method.name, "base_model": base["name"], "paper": method.paper,
            "description": f"{lead}{method.name} {'fine-tuning' if method.adversarial else 'training'} of "
                           f"{base['name']} on {run['dataset']}{describe_preprocess(rule)}{budget} "
                           f"({run['preset']} preset).",
            "threat_model": {"norm": "Linf", "eps": eps_label} if method.adversarial else backdoor or removed,
            "training_data": run["dataset"],
            "preprocess": rule, "command": command_line(run), "method_params": method.config()["params"],
            "config": config.to_dict(), "train_time_s": seconds, "resumes": progress_so_far.get("resumes", 0),
            "start_model": start_model, "provenance": provenance, "plugins": host.loaded_plugins()}
    if evaluate_with:
        protocol = get_protocol(evaluate_with)
        adapted_to = run["dataset"] if method.defense_kind == "domain-adaptation" else None  # its own pair
        info["metrics"] = measure_for_card(trained, protocol, dataset=adapted_to, progress=progress,
                                           out=out / f"eval-{protocol.name}")
    if is_main_process():
        family = "classifier" if isinstance(trained, ImageClassifier) else "clip"
        card = ModelCard(name, arch=base["arch"], method=method.name, base_model=base["name"], paper=method.paper,
                         threat_model=info["threat_model"], training_data=run["dataset"], recipe=info["command"],
                         description=info["description"], license="MIT", family=family)
        zoo.save(trained, out / "model", card, info.get("metrics"))
        if package:
            info = export_packaged(trained, name, out, info)
        atomic_write_json(out / "training.json", {"record": "training", **info, "environment": environment()})
    return info


def _start_card(spec: str, vlm) -> dict:
    """The card (as a dict) of the model a run starts from: the zoo entry's, or the card a ``local-dir:``
    folder records; a model from another source is known by its name."""
    try:
        card = zoo.info(spec)
    except (UnknownNameError, WeightsError, OSError, ValueError):
        card = {}
    return {"name": vlm.name or spec, "arch": "", "threat_model": {}, **card}


def _removed_backdoor(method, start: dict) -> dict:
    """The backdoor a backdoor-removal method cleans from its start model (as its card names it), or {}."""
    threat = start.get("threat_model") or {}
    if method.defense_kind != "backdoor-removal" or "backdoor" not in threat:
        return {}
    return {key: threat[key] for key in ("backdoor", "target", "trigger_params") if key in threat}


def _backdoor(trainer) -> dict:
    """The backdoor a trainer plants, as a card's threat model (``backdoor``, ``target``, ``rate``, and the
    trigger's other parameters where it was given any), or {}."""
    params = trainer.config()["params"]
    if not params.get("trigger") or not params.get("rate"):
        return {}
    threat = {"backdoor": params["trigger"], "target": params["target"], "rate": params["rate"]}
    return {**threat, "trigger_params": params["trigger_params"]} if params.get("trigger_params") else threat


def _train(args) -> int:
    init_from_env()
    params = None
    if args.method_params:
        cls = _method(args.method)
        params = parse_params(cls, args.method_params, f"defense {cls.name!r}", cls.pixel_params)
    trainer_params = None
    backdoor = ",".join(f"{key}={value}" for key, value in (("trigger", args.trigger), ("target", args.target),
                                                           ("rate", args.rate)) if value is not None)
    given = ",".join(part for part in (args.trainer_params, backdoor) if part)
    if given:
        trainer_cls = get_host().get("trainer", _method(args.method).trainer).obj
        trainer_params = parse_params(trainer_cls, given, f"trainer {trainer_cls.name!r}", trainer_cls.pixel_params)
    if args.trigger_params:
        trigger = (trainer_params or {}).get("trigger") or \
            _method(args.method).presets.get(args.preset, {}).get("trainer_params", {}).get("trigger")
        if trigger is None:
            raise ParameterError("--trigger-params are the parameters of a backdoor trigger; name it with --trigger.")
        attack_cls = get_host().get("attack", trigger).obj
        trainer_params = {**(trainer_params or {}), "trigger_params": parse_params(
            attack_cls, args.trigger_params, f"attack {attack_cls.name!r}", attack_cls.pixel_params)}
    run = plan(args.method, args.preset, model=args.model, data=args.dataset, eps=args.eps, steps=args.steps,
               batch_size=args.batch_size, lr=args.lr, seed=args.seed, stage=args.stage, proxy=args.proxy,
               params=params, attack_steps=args.attack_steps, preprocess=args.preprocess,
               trainer_params=trainer_params)
    out = f"runs/{args.method}-{args.preset}" if args.out is None else args.out  # an empty --out is refused
    info = resumable(out, lambda: train_run(run, out, name=args.name, device=args.device,
                                            progress=progress_flag(args), evaluate_with=args.evaluate,
                                            package=args.package, log=lambda line: print(line, file=sys.stderr)))
    if is_main_process():
        print(f"trained {run['method'].name} on {run['model']} in {info['train_time_s']} s; "
              f"model folder {Path(out) / 'model'}")
        if "metrics" in info:
            metrics = info["metrics"]
            print(f"{metrics['protocol']['name']}: " + "; ".join(
                f"{key.removesuffix('_mean')} " + (", ".join(f"{s} {100 * v:.1f}" for s, v in mean.items())
                                                    if isinstance(mean, dict) else f"{100 * mean:.1f}")
                for key, mean in metrics.items() if key.endswith("_mean") and mean is not None))
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help="a training-time defense (tecoa, fare, ...; `vlmshield list defenses`)")
    parser.add_argument("--preset", default="paper", help="the paper's run (default) or a small one (world)")
    parser.add_argument("--model", help="zoo name of the model to fine-tune (the preset's by default)")
    parser.add_argument("--proxy", help="zoo name of the proxy model, for methods that distill from one (hpt-gpd)")
    parser.add_argument("--dataset", help="training data, NAME or NAME:/root (the preset's by default)")
    parser.add_argument("--stage", help="run one stage of a multi-stage method by name (hpt-gpd: warmup, hpt), "
                                        "or all (default)")
    parser.add_argument("--method-params", help="more parameters of the method: key=value,key=value")
    parser.add_argument("--trainer-params", help="parameters of the method's trainer: key=value,key=value")
    parser.add_argument("--trigger", help="plant this backdoor trigger (a backdoor attack; the contrastive "
                                          "trainer's trigger, as with train poison)")
    parser.add_argument("--target", help="the class the trigger's captions name (banana, star, ...)")
    parser.add_argument("--rate", help="the share of training pairs that carry the trigger (0.003)")
    parser.add_argument("--trigger-params", help="parameters of the trigger: key=value,... (badclip: "
                                                 "model=clip-vitb32,patch_file=runs/badclip.safetensors)")
    parser.add_argument("--eps", help="the training budget: 2/255, 4/255, ...")
    parser.add_argument("--steps", help="optimizer steps: N for a one-stage method, or STAGE=N,... for any of "
                                        "the stages (hpt-gpd: warmup=100,hpt=600)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", help="peak learning rate: one for every stage, or STAGE=LR,... (hpt-gpd: "
                                     "warmup=1e-4,hpt=3e-4)")
    parser.add_argument("--attack-steps", type=int, help="iterations of the inner attack (the preset's by default)")
    parser.add_argument("--preprocess", help="the training images before the attack: RESIZE,CROP[,INTERPOLATION] "
                                             "(shortest side resized, centre crop; 256,224,bilinear) or native "
                                             "(the preset's by default)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="folder: checkpoint (resumable), log, model folder; default runs/METHOD-PRESET")
    parser.add_argument("--name", help="zoo name of the result (default METHOD-ARCH)")
    parser.add_argument("--evaluate", metavar="PROTOCOL", help="measure the result under a protocol (world, ...)")
    parser.add_argument("--package", action="store_true", help="also write NAME.safetensors and NAME.json, as a "
                                                               "plugin ships them")
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


COMMANDS = (Command("train", "train a model with a training-time defense (its paper's or the world's preset)",
                    _train, _train_arguments),)
