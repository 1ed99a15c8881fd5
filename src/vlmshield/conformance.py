"""The contract of each registered kind, as checks a plugin's own tests run on everything it registers.

``problems(registration)`` lists what a registration gets wrong, one sentence each (empty when it conforms);
``check_distribution("vlmshield-mymethod")`` runs them on every registration of a distribution (or of an
in-process plugin module) and raises ``ConformanceError`` listing all of them. In a plugin's tests, the
pytest fixture ``vlmshield_conformance`` (shipped with vlmshield) is the one line:

    def test_conformance(vlmshield_conformance):
        vlmshield_conformance("vlmshield-mymethod")

What is checked, on a small CNN trained in a second on a toy task (``testing.toy_classifier``), at the
budget of the reference attack (PGD-10 at eps 8/255, step 2/255; an attack is given the eps, alpha and
steps of the reference where it takes them):

- evasion attacks (adaptive ones too): the images keep their shape, stay in [0, 1] and within the budget
  (L-inf or L2, as the attack's ``norm``), the same seed gives the same images, and the attack lowers the
  toy's accuracy; an attack that chooses its own step size (it takes ``steps`` but no ``alpha``, as APGD)
  leaves no more accuracy than the reference;
- backdoor attacks: the trigger keeps the shape and [0, 1], changes the image, and is the same for the same
  seed; ``target`` is a class name;
- test-time defenses: the defended classifier gives one row of logits per image; a defense whose outputs
  differ between two passes declares ``randomized``; one whose input gradient vanishes declares an adaptive
  attack; each adaptive attack is at least as strong (5 points of accuracy at most above) as PGD crafted on
  the undefended classifier (a randomized defense's accuracies are averaged over 8 seeded draws); an adaptive
  attack written for one defense (it refuses a plain classifier) is checked as an attack on that defense;
- datasets (those that read files, on a folder given as ``Inputs(root=...)``): each split builds, has images in
  [0, 1] with labels in range, class names that are distinct strings and templates with a ``{}``;
- model cards: the architecture builds without weights, and each sha256 a weight file states is 64 hex digits
  (a file whose hash its authors never published states none);
- training-time defenses (and so the trainers that run them): four steps of a tiny CLIP (``testing.tiny_vlm``)
  on toy data of the kind the trainer takes run, change the weights, keep them finite and return the model in
  eval mode; two steps, an interruption, and a resume end with the same weights, bit for bit;
- evaluators: eight toy images scored twice (under PGD, or under a BadNet trigger aimed at a toy class, when
  the evaluator takes an attack) give every declared metric, in [0, 1], the same both times.

A trainer is checked through the training-time defenses that run on it; protocols, architectures, commands
and model sources have no checks of their own. A registration whose defaults cannot build it, or which needs
a model or data the toy cannot stand in for, is listed as "not checked" with the reason;
``inputs={name: Inputs(model=..., data=..., params=...)}`` gives it what it needs.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .core import (
    Attack,
    BackdoorAttack,
    CaptionedImages,
    DatasetEntry,
    DomainPair,
    Evaluator,
    LabelledImages,
    ModelCard,
    ParameterError,
    Registration,
    Stage,
    TestTimeDefense,
    TrainConfig,
    TrainingDefense,
    UnlabelledImages,
    VlmshieldError,
    canonical_name,
    get_host,
    signature_defaults,
)
from .testing import TOY_CLASSES, tiny_vlm, toy_classifier, toy_dataset

#: The trained toy every check uses (trained once per process; attacks leave it as they found it).
_toy = lru_cache(maxsize=1)(toy_classifier)

#: The budget every check attacks with (8/255: large enough that a working attack moves the toy).
EPS = 8 / 255
#: The reference attack's budget, step and iterations (PGD-10, step eps/4), given to every attack that takes them.
REFERENCE = {"eps": EPS, "alpha": EPS / 4, "steps": 10}
#: How much more accurate than PGD on the undefended classifier an adaptive attack may leave a defense.
ADAPTIVE_SLACK = 0.05


class ConformanceError(AssertionError):
    """What a distribution's registrations get wrong, one line each."""


class NotCheckable(Exception):
    """The check cannot run on this registration with the inputs it has (the reason, one sentence)."""


@dataclass
class Inputs:
    """What a check runs a registration on, where the toy cannot stand in: ``model`` and ``data`` for a
    training-time defense or an evaluator, ``root`` for a dataset that reads files, ``params`` for the
    registration's constructor, ``trainer_params`` for a training-time defense's trainer, ``attack`` (a name
    or an instance) for an evaluator."""

    model: nn.Module | None = None
    data: object = None
    #: The folder a dataset that reads files is built from.
    root: object = None
    params: dict = field(default_factory=dict)
    trainer_params: dict = field(default_factory=dict)
    attack: object = None


def registrations_of(distribution) -> list[Registration]:
    """Everything ``distribution`` (a distribution name, or an in-process plugin module) registers."""
    host = get_host()
    wanted = canonical_name(distribution if isinstance(distribution, str) else distribution.__name__)
    return [r for registry in host.registries.values() for r in registry
            if wanted in (canonical_name(r.distribution or ""), canonical_name(r.plugin))]


def check_distribution(distribution, inputs: dict[str, Inputs] | None = None) -> list[str]:
    """Run every check on everything ``distribution`` registers (``inputs``: what a registration, by name, is
    run on where the toy cannot stand in); raises ConformanceError listing the problems, returns what was
    checked (and, marked, what could not be checked, with the reason)."""
    found = registrations_of(distribution)
    if not found:
        raise ConformanceError(f"nothing is registered by {distribution!r}: is the plugin installed and loaded "
                               f"(`vlmshield plugins`)?")
    inputs = inputs or {}
    unknown = set(inputs) - {r.name for r in found}
    if unknown:
        raise ConformanceError(f"inputs are given for {', '.join(sorted(unknown))}, which {distribution!r} does "
                               f"not register.")
    errors, checked = [], []
    for registration in found:
        what = f"{registration.kind} {registration.name}"
        try:
            found_problems = problems(registration, inputs.get(registration.name))
        except (ParameterError, NotCheckable) as error:  # it needs what no default gives (a patch optimised on a model)
            checked.append(f"{what} (not checked: {error})")
            continue
        errors += [f"{what}: {problem}" for problem in found_problems or ()]
        checked.append(what if found_problems is not None else f"{what} (this kind has no checks)")
    if errors:
        raise ConformanceError("\n".join(errors))
    return checked


def problems(registration: Registration, inputs: Inputs | None = None) -> list[str] | None:
    """What one registration gets wrong (module docstring), one sentence each; None for a kind with no checks
    (protocols, architectures, commands, model sources). A trainer is checked through the training-time
    defenses that run on it."""
    obj, inputs = registration.obj, inputs or Inputs()
    if registration.kind == "attack" and isinstance(obj, type) and issubclass(obj, Attack):
        return attack_problems(obj, registration.name)
    if registration.kind == "attack" and isinstance(obj, type) and issubclass(obj, BackdoorAttack):
        return backdoor_problems(obj)
    if registration.kind == "defense" and isinstance(obj, type) and issubclass(obj, TestTimeDefense):
        return test_time_problems(obj)
    if registration.kind == "defense" and isinstance(obj, type) and issubclass(obj, TrainingDefense):
        return training_problems(obj, inputs)
    if registration.kind == "evaluator" and isinstance(obj, type) and issubclass(obj, Evaluator):
        return evaluator_problems(obj, inputs)
    if registration.kind == "dataset" and isinstance(obj, DatasetEntry) and not obj.members:
        return dataset_problems(obj, inputs.root)
    if registration.kind == "model" and isinstance(obj, ModelCard):
        return card_problems(obj)
    if registration.kind == "trainer":
        if not any(isinstance(r.obj, type) and issubclass(r.obj, TrainingDefense) and r.obj.trainer == registration.name
                   for r in get_host().registries["defense"]):
            raise NotCheckable("no registered training-time defense runs on it; register one.")
        return []
    return None


#: How many draws of a randomized defense's randomness an accuracy averages (one draw of 128 toy images
#: varies by several points).
DRAWS = 8


def _accuracy(model, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> float:
    """Accuracy, averaged over ``draws`` seeded draws of the model's randomness (the global random state)."""
    total = 0.0
    with torch.random.fork_rng(), torch.no_grad():
        for draw in range(draws):
            torch.manual_seed(draw)
            total += (model(x).argmax(1) == y).float().mean().item()
    return total / draws


def _budget(cls) -> dict:
    """The reference's eps, alpha and steps, those of them ``cls`` takes."""
    takes = signature_defaults(cls)
    return {key: value for key, value in REFERENCE.items() if key in takes}


def _reference(model, x, y) -> torch.Tensor:
    return get_host().create("attack", "pgd", **REFERENCE)(model, x, y, seed=0)


def _defended_toys(attack: str) -> list[tuple[str, nn.Module]]:
    """The toy behind each registered test-time defense that names ``attack`` among its adaptive attacks."""
    host, toy = get_host(), _toy()
    return [(r.name, _wrap(r.obj.create(), toy[0], toy[1])) for r in host.registries["defense"]
            if isinstance(r.obj, type) and issubclass(r.obj, TestTimeDefense) and attack in r.obj.adaptive_attacks]


def _wrap(defense: TestTimeDefense, model: nn.Module, x: torch.Tensor) -> nn.Module:
    size = defense.calibration_size()
    return defense.wrap(model, x[:size]) if size else defense.wrap(model)


def attack_problems(cls, name: str = "") -> list[str]:
    """The attack's problems on the toy; an adaptive attack that refuses a plain classifier (it is written for one
    defense) is checked against the toy behind each defense that names it."""
    model, x, y = _toy()
    attack = cls.create(**_budget(cls))
    try:
        return _attack_problems(attack, model, x, y)
    except ParameterError:
        targets = _defended_toys(name or cls.name) if cls.adaptive else []
        if not targets:
            raise
    return [f"against {defense}: {problem}" for defense, defended in targets
            for problem in _attack_problems(attack, defended, x, y)]


def _attack_problems(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    cls = type(attack)
    found = []
    x_adv = attack(model, x, y, seed=0)
    if x_adv.shape != x.shape:
        return [f"returned images of shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}."]
    if x_adv.min() < 0 or x_adv.max() > 1:
        found.append(f"left [0, 1]: pixel values from {x_adv.min().item():.3f} to {x_adv.max().item():.3f}.")
    eps, norm = attack.params.get("eps"), attack.params.get("norm", "Linf")
    if eps is not None:
        delta = (x_adv - x).flatten(1)
        size = (delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)).max().item()
        if size > eps + 1e-5:
            found.append(f"left its {norm} budget: a perturbation of {size:.4f} for eps {eps:.4f}.")
    if not torch.equal(x_adv, attack(model, x, y, seed=0)):
        found.append("gave other images for the same seed: an attack is seeded (its generator, not the global "
                     "random state).")
    clean, attacked = _accuracy(model, x, y), _accuracy(model, x_adv, y)
    if attacked >= clean:
        found.append(f"did not lower a trained toy's accuracy ({100 * clean:.1f}% clean, {100 * attacked:.1f}% "
                     f"attacked at eps {EPS:.4f}).")
    takes = signature_defaults(cls)
    if "steps" in takes and "alpha" not in takes and norm == "Linf":
        pgd = _accuracy(model, _reference(model, x, y), y)
        if attacked > pgd:
            found.append(f"chooses its own step size and is weaker than PGD with as many steps: it leaves "
                         f"{100 * attacked:.1f}% accuracy, PGD {100 * pgd:.1f}%.")
    return found


def backdoor_problems(cls) -> list[str]:
    trigger, x = cls.create(), _toy()[1]
    found = []
    if not isinstance(trigger.target, str) or not trigger.target:
        found.append(f"its target must be a class name; got {trigger.target!r}.")
    once = trigger.apply_trigger(x, torch.Generator().manual_seed(0))
    if once.shape != x.shape or once.min() < 0 or once.max() > 1:
        return [*found, "the trigger must keep the images' shape and [0, 1]."]
    if torch.equal(once, x):
        found.append("the trigger left the images unchanged.")
    if not torch.equal(once, trigger.apply_trigger(x, torch.Generator().manual_seed(0))):
        found.append("the trigger differs for the same seed.")
    return found


def test_time_problems(cls) -> list[str]:
    host, defense = get_host(), cls.create()
    model, x, y = _toy()
    defended = _wrap(defense, model, x)
    found = []
    with torch.no_grad():
        first, second = defended(x), defended(x)
    if first.shape != (len(x), 4):
        return [f"the defended classifier gave logits of shape {tuple(first.shape)} for {len(x)} images of 4 classes."]
    if not cls.randomized and not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        found.append("two passes over the same images differ: declare randomized = True (attacks need EOT).")
    images = x.clone().requires_grad_(True)
    with torch.enable_grad():
        gradient, = torch.autograd.grad(defended(images).logsumexp(1).sum(), images, allow_unused=True)
    if (gradient is None or not gradient.abs().sum() > 0) and not cls.adaptive_attacks:
        found.append("its input gradient vanishes and it declares no adaptive attack (BPDA): gradient attacks "
                     "would overstate its robustness.")
    draws = DRAWS if cls.randomized else 1
    transferred = _accuracy(defended, _reference(model, x, y), y, draws)
    for name in cls.adaptive_attacks:
        adaptive = host.create("attack", name, **_budget(host.get("attack", name).obj))
        accuracy = _accuracy(defended, adaptive(defended, x, y, seed=0), y, draws)
        if accuracy > transferred + ADAPTIVE_SLACK:
            found.append(f"its adaptive attack {name} leaves {100 * accuracy:.1f}% accuracy, above the "
                         f"{100 * transferred:.1f}% of PGD crafted on the undefended classifier: an adaptive "
                         f"attack weaker than a non-adaptive one cannot certify the defense.")
    return found


def _labelled_parts(data) -> list[LabelledImages]:
    return [data.source, data.target_test] if isinstance(data, DomainPair) else \
        [data] if isinstance(data, LabelledImages) else []


def dataset_problems(entry: DatasetEntry, root=None) -> list[str]:
    if entry.needs_root and root is None:
        raise NotCheckable("it reads files: give Inputs(root=...), a folder of the layout it reads.")
    found = []
    for split in entry.splits:
        built = entry.build(root=None if root is None else Path(root), split=split, image_size=32,
                            **({"variant": entry.variants[0]} if entry.variants else {}))
        for part in _labelled_parts(built):
            classes = list(part.classnames)
            if len(part) == 0:
                found.append(f"split {split} ({part.name}) is empty.")
                continue
            if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
                found.append(f"split {split}: class names must be distinct non-empty strings.")
            if not part.templates or not all("{}" in t or "{c}" in t for t in part.templates):
                found.append(f"split {split}: every prompt template needs a '{{}}' for the class name.")
            for index in range(min(len(part), 4)):
                image, label = part[index][0], int(part[index][1])
                if not 0 <= label < len(classes):
                    found.append(f"split {split}: label {label} of item {index} is outside 0..{len(classes) - 1}.")
                if image.min() < 0 or image.max() > 1:
                    found.append(f"split {split}: item {index} has pixels outside [0, 1].")
    return found


def card_problems(card: ModelCard) -> list[str]:
    found = [f"the weight file {file} names the sha256 {digest!r}, not 64 hex digits."
             for file, digest in card.files.items()
             if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", str(digest))]
    if card.source in ("recipe", "manual") or card.loader is None and not card.pretrained:
        return found
    try:
        model = card.load(weights=False)
    except Exception as error:  # any failure to build is the card's problem, reported as such
        return [*found, f"its architecture does not build without weights: {type(error).__name__}: {error}"]
    if not sum(p.numel() for p in model.parameters()):
        found.append("the model it builds has no parameters.")
    if not all(math.isfinite(p.float().sum().item()) for p in model.parameters()):
        found.append("the model it builds has non-finite parameters.")
    return found


def _toy_data(takes: str):
    """Toy data of the kind ``takes`` names (``DATA_TYPES``), on the toy task's images."""
    labelled = toy_dataset(16)
    if takes in ("labelled", "unlabelled"):
        return labelled
    if takes == "captioned":
        return CaptionedImages([(image, f"a photo of a {TOY_CLASSES[int(label)]}.") for image, label in labelled],
                               name="toy-captions")
    if takes == "domain-pair":  # the toy task as its own target domain
        return DomainPair(labelled, UnlabelledImages(labelled, name="toy-target"), labelled, name="toy-pair")
    raise NotCheckable(f"there is no toy data of the kind {takes!r}; give Inputs(data=...).")


@contextmanager
def _on_the_toys():
    """A refusal of the tiny CLIP or the toy data (the registration needs a model or data of its own) is
    NotCheckable, with what it said."""
    try:
        yield
    except VlmshieldError as error:
        raise NotCheckable(f"on a tiny CLIP and toy data it says: {error} Give Inputs(model=..., data=...).") \
            from error


#: Four steps of one stage: long enough to resume in the middle, short enough to take seconds.
TRAINING = TrainConfig(stages=(Stage("conformance", steps=4, lr=1e-3, warmup=0, weight_decay=0.0),), batch_size=4,
                       attack_steps=1, checkpoint_every=1, log_every=1, amp=False)


def training_problems(cls, inputs: Inputs) -> list[str]:
    method = cls.create(**inputs.params)
    takes = get_host().get("trainer", method.trainer).obj.takes
    model = inputs.model if inputs.model is not None else tiny_vlm()
    data = inputs.data if inputs.data is not None else _toy_data(takes)

    def fit(out: Path, **options) -> nn.Module:
        with _on_the_toys():
            return method.fit(copy.deepcopy(model), data, TRAINING, trainer_params=inputs.trainer_params, out=out,
                              progress=False, **options)

    with tempfile.TemporaryDirectory() as tmp:
        whole = fit(Path(tmp, "whole"))
        fit(Path(tmp, "parts"), stop_after=2)
        resumed = fit(Path(tmp, "parts"))
    found = []
    if not isinstance(whole, nn.Module) or whole.training:
        return ["fit must return the trained model in eval mode."]
    weights = whole.state_dict()
    if not all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()):
        found.append("four steps left non-finite weights.")
    before = model.state_dict()
    if weights.keys() == before.keys() and all(torch.equal(weights[k], before[k]) for k in weights):
        found.append("four steps left every weight as it was.")
    other = resumed.state_dict()
    if weights.keys() != other.keys() or not all(torch.equal(weights[k], other[k]) for k in weights):
        different = next((k for k in weights if k not in other or not torch.equal(weights[k], other[k])), "?")
        found.append(f"a run interrupted after two of four steps and resumed ends with other weights than an "
                     f"uninterrupted one ({different} differs): a step must depend only on the checkpoint and "
                     f"its own seed.")
    return found


def _evaluation_attack(cls, inputs: Inputs):
    if inputs.attack is not None:
        return inputs.attack
    if cls.attack_type is None:
        return None
    if issubclass(Attack, cls.attack_type):
        return get_host().create("attack", "pgd", **{**REFERENCE, "steps": 2})
    if issubclass(BackdoorAttack, cls.attack_type):
        return get_host().create("attack", "badnet", target=TOY_CLASSES[2])
    raise NotCheckable(f"it takes attacks of the kind {cls.attack_type.__name__}; give Inputs(attack=...).")


def evaluator_problems(cls, inputs: Inputs) -> list[str]:
    from .engine.evaluation import evaluate  # the check runs the evaluator as the engine does

    model = inputs.model if inputs.model is not None else tiny_vlm()
    data = inputs.data if inputs.data is not None else _toy_data(cls.takes)
    attack = _evaluation_attack(cls, inputs)

    def run() -> dict:
        with _on_the_toys():
            return evaluate(model, data, evaluator=cls.create(**inputs.params), attack=attack, n=8, batch_size=4,
                            progress=False)

    first, second = run(), run()
    if first["skipped"]:
        raise NotCheckable(f"it skips the toy data: {next(iter(first['skipped'].values()))}")
    found = []
    for part, numbers in first["results"].items():
        for metric in cls.metrics:
            value = numbers.get(metric)
            if value is None:
                found.append(f"its record of {part} has no {metric}, a metric it declares.")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isnan(value)
                                                                                    or 0 <= value <= 1):
                found.append(f"{metric} is {value!r} on {part}; a metric is a fraction in [0, 1] (or NaN).")
    if json.dumps(first["results"], sort_keys=True) != json.dumps(second["results"], sort_keys=True):
        found.append("two evaluations with the same seed gave different numbers.")
    return found
