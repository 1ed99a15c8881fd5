"""What an attack is, and the pieces every attack shares.

An evasion attack is a callable ``attack(classifier, x, y) -> x_adv``: ``classifier`` maps [0, 1]
images to an output (logits, or an embedding for feature-space attacks), ``y`` is what the loss
compares that output with (labels, or target embeddings). Every attack

- keeps ``x_adv`` inside the eps-ball around ``x`` and inside [0, 1];
- is deterministic given its ``seed`` (random draws come from its own generator, never the global one);
- runs the classifier in eval mode with frozen parameters and restores both afterwards;
- takes a ``loss``: a name (``ce``, ``cw``, ``dlr``, ``l2``) or a callable ``loss(output, y)`` that
  returns one value per sample, to be maximised.

A backdoor attack plants a trigger instead: ``apply_trigger(x)``, and ``poison(data, rate)`` returns
image-caption pairs of which a fraction carry the trigger and a caption naming the target.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F

from .data import CaptionedImages
from .errors import InputError, ParameterError
from .model import DEFAULT_TEMPLATES, check_images, eval_mode, frozen
from .params import Configurable, check_template, parse_eps
from .seeds import derive_seed

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = {"linf": "Linf", "inf": "Linf", "l2": "L2"}


# --------------------------------------------------------------------------- losses
def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def _true_and_best_other(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return true, other


def margin_loss(kappa: float = 50.0) -> LossFn:
    """Carlini-Wagner margin, max_{i != y} z_i - z_y, capped at ``kappa``."""
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        true, other = _true_and_best_other(logits, y)
        return (other - true).clamp(max=kappa)
    return loss


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): scale-invariant margin; needs 3 classes."""
    if logits.shape[1] < 3:
        raise ParameterError(f"the DLR loss needs at least 3 classes; the classifier has {logits.shape[1]}.")
    top = logits.sort(dim=1).values
    true, other = _true_and_best_other(logits, y)
    return -(true - other) / (top[:, -1] - top[:, -3] + 1e-12)


class TargetedLoss:
    """A loss towards per-sample ``target`` classes; ``subset(idx)`` is the loss of those samples alone
    (attacks that stop computing fooled points call it)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], target: torch.Tensor):
        self.fn, self.target = fn, target

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, y, self.target)

    def subset(self, index: torch.Tensor) -> TargetedLoss:
        return TargetedLoss(self.fn, self.target[index])


def _targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    top = logits.sort(dim=1).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - aim) / (top[:, -1] - 0.5 * (top[:, -3] + top[:, -4]) + 1e-12)


def targeted_dlr_loss(target: torch.Tensor) -> TargetedLoss:
    """Targeted DLR towards ``target`` classes; needs 4 classes."""
    return TargetedLoss(_targeted_dlr, target)


def squared_l2_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance per sample, summed over features (FARE's embedding loss), in float32."""
    return (output.float() - target.float()).pow(2).flatten(1).sum(dim=1)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": margin_loss(), "dlr": dlr_loss, "l2": squared_l2_loss}


def resolve_loss(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]
    raise ParameterError(f"loss must be one of {', '.join(LOSSES)} or a callable(output, y); got {loss!r}.")


# ---------------------------------------------------------------- shared mechanics
def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The closest point to ``x_adv`` within the ``norm`` ball of radius eps around ``x``, then in [0, 1]."""
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
    return (x + delta).clamp(0, 1)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the eps-ball (Linf) or of the L2 ball, clipped to [0, 1]."""
    shape = x.shape
    if norm == "Linf":
        delta = (torch.rand(shape, generator=generator) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = direction * eps * torch.rand(shape[0], generator=generator).view(-1, 1, 1, 1)
    return (x + delta.to(x.device, x.dtype)).clamp(0, 1)


def loss_and_grad(classifier, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, check: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-sample loss, gradient of its sum w.r.t. x, output) at ``x``; no parameter gradients.

    With ``check``, labels are first checked against the output (use it on an attack's first step).
    """
    x = x.detach().requires_grad_(True)
    output = classifier(x)
    if check and is_labels(y):
        check_logits(output, y)
    losses = loss_fn(output, y)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad, output.detach()


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size: sign(grad) for Linf, grad / ||grad|| for L2."""
    return grad.sign() if norm == "Linf" else grad / per_sample_norm(grad)


def is_labels(y: torch.Tensor) -> bool:
    return not y.is_floating_point() and not y.is_complex() and y.ndim == 1


def check_logits(output: torch.Tensor, y: torch.Tensor) -> None:
    """InputError unless ``output`` are logits over at least 2 classes that the labels ``y`` index."""
    if output.ndim != 2:
        raise InputError(f"the classifier must return logits of shape (N, classes); got {tuple(output.shape)}.")
    if output.shape[1] < 2:
        raise InputError(f"the classifier has {output.shape[1]} class; attacks need at least 2.")
    if y.numel() and (y.min() < 0 or y.max() >= output.shape[1]):
        raise InputError(f"labels must lie in [0, {output.shape[1] - 1}]; got [{y.min().item()}, {y.max().item()}].")


def clean_logits(classifier, x: torch.Tensor, y: torch.Tensor, attack_name: str) -> torch.Tensor:
    """The classifier's logits on ``x``, once ``y`` is checked to be labels it can be scored on."""
    if not is_labels(y):
        raise InputError(f"{attack_name} attacks a classifier: its targets must be class labels.")
    with torch.no_grad():
        logits = classifier(x)
    check_logits(logits, y)
    return logits


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


# ------------------------------------------------------------------- base classes
class Attack(Configurable, abc.ABC):
    """An evasion attack: ``attack(classifier, x, y) -> x_adv`` within the eps-ball and [0, 1]."""

    kind: ClassVar[str] = "attack"
    #: Attacks that are designed to see through a test-time defense (BPDA, EOT, ...).
    adaptive: ClassVar[bool] = False
    #: Parameters in pixel units, read with the eps rule on the command line.
    pixel_params: ClassVar[frozenset[str]] = frozenset({"eps", "alpha"})

    def __init__(self, **params):
        if "norm" in params:
            norm = NORMS.get(str(params["norm"]).lower())
            if norm is None:
                raise ParameterError(f"norm must be 'Linf' or 'L2'; got {params['norm']!r}.")
            params["norm"] = norm
        norm = params.get("norm", "Linf")
        for key in ("eps", "alpha"):
            if key in params:
                value = params[key]
                if norm == "Linf" or isinstance(value, str):
                    params[key] = parse_eps(value, key)
                elif not (isinstance(value, (int, float)) and value > 0):
                    raise ParameterError(f"{key} must be a positive number; got {value!r}.")
                else:
                    params[key] = float(value)
        for key in ("steps", "seed", "n_restarts", "eot"):
            if key in params and (isinstance(params[key], bool) or not isinstance(params[key], int)):
                raise ParameterError(f"{key} must be an integer; got {params[key]!r}.")
        if params.get("steps", 1) < 1:
            raise ParameterError(f"steps must be 1 or more (an attack of no steps leaves the images as they are); "
                                 f"got {params['steps']}.")
        if params.get("n_restarts", 1) < 1:
            raise ParameterError(f"n_restarts must be 1 or more; got {params['n_restarts']}.")
        if params.get("eot", 1) < 1:
            raise ParameterError(f"eot must be 1 or more draws; got {params['eot']}.")
        if "loss" in params:
            resolve_loss(params["loss"])
        super().__init__(**params)

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor, *, seed: int | None = None) -> torch.Tensor:
        check_images(x)
        if not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]:
            raise InputError(f"targets must be a tensor with one entry per image ({x.shape[0]}); "
                             f"got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}.")
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        x, y = x.detach(), y.detach().to(x.device)
        if x.shape[0] == 0:
            return x.clone()
        with eval_mode(classifier), frozen(classifier), torch.enable_grad():
            x_adv = self.perturb(classifier, x, y, generator)
        return project(x_adv.detach(), x, self.eps, self.params.get("norm", "Linf"))

    @abc.abstractmethod
    def perturb(self, classifier, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return adversarial images for (x, y). Called by ``__call__`` with everything checked."""


class EOTAttack(Attack):
    """PGD on an objective averaged over ``eot`` draws of a randomized classifier (Expectation over
    Transformation): the base of adaptive attacks on test-time defenses. Subclasses define ``objective``
    and take ``eps``, ``alpha``, ``steps``, ``eot``, ``norm``, ``random_start`` and ``seed``."""

    adaptive: ClassVar[bool] = True

    @abc.abstractmethod
    def objective(self, classifier, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The per-sample value to maximise at ``x`` (differentiable in x), for one draw of the randomness."""

    def perturb(self, classifier, x, y, generator: torch.Generator) -> torch.Tensor:
        if is_labels(y):
            with torch.no_grad():
                check_logits(classifier(x[:1]), y[:1])
        x_adv = random_start(x, self.eps, self.norm, generator) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            total = sum(self.objective(classifier, x_adv, y, generator).sum() for _ in range(self.eot)) / self.eot
            (grad,) = torch.autograd.grad(total, x_adv)
            x_adv = project(x_adv.detach() + self.alpha * ascent_direction(grad, self.norm), x, self.eps, self.norm)
        return x_adv


class BackdoorAttack(Configurable, abc.ABC):
    """A backdoor: a trigger that, once planted by poisoned training pairs, maps images to ``target``."""

    kind: ClassVar[str] = "attack"
    pixel_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, target: str = "banana", seed: int = 0, **params):
        if not isinstance(target, str) or not target.strip():
            raise ParameterError(f"the backdoor target must be a class name; got {target!r}.")
        super().__init__(target=target, seed=seed, **params)

    @abc.abstractmethod
    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return the images with the trigger drawn on them, still in [0, 1]."""

    def poison(self, data: CaptionedImages, rate: float, templates=DEFAULT_TEMPLATES) -> CaptionedImages:
        """``data`` with a fraction ``rate`` of its pairs poisoned: the trigger on the image and a caption
        naming the target (one of ``templates``), as a lazy view named ``NAME+ATTACK@RATE``.

        Which pairs (``round(rate * len(data))`` of them, chosen with ``seed``; the view's ``poisoned``
        lists them in order) and, for each, the trigger's random draws and the template depend only on
        ``seed`` and the pair's index, so the view reads the same whatever the order of reading."""
        if not isinstance(data, CaptionedImages):
            raise ParameterError(f"a backdoor poisons image-caption pairs; {getattr(data, 'name', data)!r} is "
                                 f"{type(data).__name__}.")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ParameterError(f"the poisoning rate must be in [0, 1]; got {rate}.")
        templates = [check_template(t) for t in templates]
        count = round(rate * len(data))
        chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[:count]
        return _PoisonedPairs(data, self, sorted(chosen.tolist()), templates, f"{data.name}+{self.name}@{rate:g}")


class _PoisonedPairs(CaptionedImages):
    """``data``'s pairs, those at the indices ``poisoned`` with ``attack``'s trigger and a caption naming its
    target (``BackdoorAttack.poison`` makes it)."""

    def __init__(self, data: CaptionedImages, attack: BackdoorAttack, poisoned: list[int], templates: list[str],
                 name: str):
        super().__init__(data, name)
        self.attack, self.poisoned, self.templates = attack, poisoned, templates
        self._poisoned = frozenset(poisoned)

    def __getitem__(self, index: int):
        image, caption = self.data[index]
        index = range(len(self))[index]
        if index not in self._poisoned:
            return image, caption
        generator = torch.Generator().manual_seed(derive_seed(self.attack.seed, "trigger", index))
        template = self.templates[int(torch.randint(len(self.templates), (1,), generator=generator))]
        return self.attack.apply_trigger(image[None], generator)[0], template.replace("{}", self.attack.target)
