"""The contract of each registered kind, as checks a plugin's own tests run on everything it registers.

``problems(registration)`` lists what a registration gets wrong, one sentence each (empty when it conforms);
``check_distribution("vlmshield-mymethod")`` runs them on every registration of a distribution (or of an
in-process plugin module) and raises ``ConformanceError`` listing all of them. In a plugin's tests, the
pytest fixture ``vlmshield_conformance`` (shipped with vlmshield) is the one line:

    def test_conformance(vlmshield_conformance):
        vlmshield_conformance("vlmshield-mymethod")

What is checked, on a small CNN trained in a second on a toy task (``testing.toy_classifier``):

- evasion attacks (adaptive ones too): the images keep their shape, stay in [0, 1] and within the budget
  (L-inf or L2, as the attack's ``norm``), the same seed gives the same images, and the attack lowers the
  toy's accuracy;
- backdoor attacks: the trigger keeps the shape and [0, 1], changes the image, and is the same for the same
  seed; ``target`` is a class name;
- test-time defenses: the defended classifier gives one row of logits per image; a defense whose outputs
  differ between two passes declares ``randomized``; one whose input gradient vanishes declares an adaptive
  attack; each adaptive attack is at least as strong (5 points of accuracy at most above) as PGD crafted on
  the undefended classifier;
- datasets that read no files: each split builds, has images in [0, 1] with labels in range, class names
  that are distinct strings and templates with a ``{}``;
- model cards: the architecture builds without weights, and each sha256 a weight file states is 64 hex digits
  (a file whose hash its authors never published states none).

Trainers and evaluators are checked by running them in the plugin's own tests (a few steps, resume).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import torch

from .core import (
    Attack,
    BackdoorAttack,
    DatasetEntry,
    DomainPair,
    LabelledImages,
    ModelCard,
    ParameterError,
    Registration,
    TestTimeDefense,
    canonical_name,
    get_host,
    signature_defaults,
)
from .testing import toy_classifier

#: The trained toy every check uses (trained once per process; attacks leave it as they found it).
_toy = lru_cache(maxsize=1)(toy_classifier)

#: The budget every check attacks with (8/255: large enough that a working attack moves the toy).
EPS = 8 / 255
#: How much more accurate than PGD on the undefended classifier an adaptive attack may leave a defense.
ADAPTIVE_SLACK = 0.05


class ConformanceError(AssertionError):
    """What a distribution's registrations get wrong, one line each."""


def registrations_of(distribution) -> list[Registration]:
    """Everything ``distribution`` (a distribution name, or an in-process plugin module) registers."""
    host = get_host()
    wanted = canonical_name(distribution if isinstance(distribution, str) else distribution.__name__)
    return [r for registry in host.registries.values() for r in registry
            if wanted in (canonical_name(r.distribution or ""), canonical_name(r.plugin))]


def check_distribution(distribution) -> list[str]:
    """Run every check on everything ``distribution`` registers; raises ConformanceError listing the problems,
    returns what was checked (and, marked, what could not be built from its defaults alone)."""
    found = registrations_of(distribution)
    if not found:
        raise ConformanceError(f"nothing is registered by {distribution!r}: is the plugin installed and loaded "
                               f"(`vlmshield plugins`)?")
    errors, checked = [], []
    for registration in found:
        try:
            errors += [f"{registration.kind} {registration.name}: {problem}" for problem in problems(registration)]
            checked.append(f"{registration.kind} {registration.name}")
        except ParameterError as error:  # it needs parameters no default gives (a patch optimised on a model)
            checked.append(f"{registration.kind} {registration.name} (not checked: {error})")
    if errors:
        raise ConformanceError("\n".join(errors))
    return checked


def problems(registration: Registration) -> list[str]:
    """What one registration gets wrong (module docstring), one sentence each."""
    obj = registration.obj
    if registration.kind == "attack" and isinstance(obj, type) and issubclass(obj, Attack):
        return attack_problems(obj)
    if registration.kind == "attack" and isinstance(obj, type) and issubclass(obj, BackdoorAttack):
        return backdoor_problems(obj)
    if registration.kind == "defense" and isinstance(obj, type) and issubclass(obj, TestTimeDefense):
        return test_time_problems(obj)
    if registration.kind == "dataset" and isinstance(obj, DatasetEntry) and not obj.needs_root and not obj.members:
        return dataset_problems(obj)
    if registration.kind == "model" and isinstance(obj, ModelCard):
        return card_problems(obj)
    return []


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _budget(cls) -> dict:
    return {"eps": EPS} if "eps" in signature_defaults(cls) else {}


def attack_problems(cls) -> list[str]:
    model, x, y = _toy()
    attack = cls.create(**_budget(cls))
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
    calibration = x[:defense.calibration_size()] if defense.calibration_size() else None
    defended = defense.wrap(model, calibration) if calibration is not None else defense.wrap(model)
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
    transferred = _accuracy(defended, host.create("attack", "pgd", eps=EPS, steps=10)(model, x, y, seed=0), y)
    for name in cls.adaptive_attacks:
        adaptive = host.create("attack", name, **_budget(host.get("attack", name).obj))
        accuracy = _accuracy(defended, adaptive(defended, x, y, seed=0), y)
        if accuracy > transferred + ADAPTIVE_SLACK:
            found.append(f"its adaptive attack {name} leaves {100 * accuracy:.1f}% accuracy, above the "
                         f"{100 * transferred:.1f}% of PGD crafted on the undefended classifier: an adaptive "
                         f"attack weaker than a non-adaptive one cannot certify the defense.")
    return found


def _labelled_parts(data) -> list[LabelledImages]:
    return [data.source, data.target_test] if isinstance(data, DomainPair) else \
        [data] if isinstance(data, LabelledImages) else []


def dataset_problems(entry: DatasetEntry) -> list[str]:
    found = []
    for split in entry.splits:
        built = entry.build(root=None, split=split, image_size=32, **({"variant": entry.variants[0]}
                                                                      if entry.variants else {}))
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
