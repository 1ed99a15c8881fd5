"""Sanity flags, as AutoAttack raises them: signs that a robust accuracy may be overestimated.

``check_classifier`` runs on a few clean images of each dataset before an evasion attack (a backdoor
trigger needs no gradient, so an attack success rate raises none of these but the last):

- ``zero-gradients``: the loss has an all-zero input gradient at some images (gradient masking: a
  gradient attack cannot move them, which says nothing about robustness); not raised when adaptive
  attacks ran beside, which are built to pass such a defense (BPDA);
- ``randomized-outputs``: two forward passes of the same images disagree (the attack needs an
  expectation over the randomness, EOT);
- ``autograd-in-forward``: the forward pass runs backpropagation (a test-time defense that optimises):
  a non-adaptive attack does not see what it does.
- ``non-finite-outputs``: the logits hold NaN or infinity (NaN weights, an overflow); the other checks
  are skipped, since nothing computed from such logits means anything.

``check_results`` adds, after the run, ``robust-above-clean`` (impossible for a deterministic
classifier) and ``test-time-defense`` (the number is that of a non-adaptive attack on a defense that
runs at test time and no adaptive attack ran beside it). The evaluation adds ``n-above-size`` when a
dataset has fewer images than the ``n`` asked (all were evaluated; its result's ``n`` says how many).
Flags are reported, never silenced.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..core import TestTimeDefense


def flag(name: str, detail: str, dataset: str | None = None) -> dict:
    return {"flag": name, "dataset": dataset, "detail": detail}


def format_flag(entry: dict) -> str:
    """One line for a table or a log: ``FLAG name (dataset): detail``."""
    where = f" ({entry['dataset']})" if entry.get("dataset") else ""
    return f"FLAG {entry['flag']}{where}: {entry['detail']}"


@contextlib.contextmanager
def _counting_backward():
    """Count calls of torch.autograd.grad and Tensor.backward while the block runs."""
    calls = {"count": 0}
    grad, backward = torch.autograd.grad, torch.Tensor.backward

    def counted_grad(*args, **kwargs):
        calls["count"] += 1
        return grad(*args, **kwargs)

    def counted_backward(self, *args, **kwargs):
        calls["count"] += 1
        return backward(self, *args, **kwargs)

    torch.autograd.grad, torch.Tensor.backward = counted_grad, counted_backward
    try:
        yield calls
    finally:
        torch.autograd.grad, torch.Tensor.backward = grad, backward


def check_classifier(classifier, x: torch.Tensor, y: torch.Tensor, dataset: str,
                     attacked: bool = True, adaptive: bool = False) -> list[dict]:
    """The flags a classifier raises on the clean batch ``(x, y)``; before a clean evaluation or a backdoor
    trigger (``attacked=False``) only ``non-finite-outputs``, the one flag about clean accuracy; no
    ``zero-gradients`` when adaptive attacks run beside (``adaptive``)."""
    flags = []
    with _counting_backward() as calls, torch.no_grad():
        first = classifier(x)
    if not torch.isfinite(first).all():  # NaN weights, an overflow: every number of the run is meaningless
        bad = int((~torch.isfinite(first)).flatten(1).any(1).sum())
        return [flag("non-finite-outputs", f"the classifier gives NaN or infinite logits for {bad} of {len(x)} clean "
                     f"images: its weights or inputs are broken, and no accuracy measured on it means anything.",
                     dataset)]
    if not attacked:
        return flags
    if calls["count"]:
        flags.append(flag("autograd-in-forward", f"the forward pass ran backpropagation {calls['count']} times "
                          f"on {len(x)} images: a non-adaptive attack does not see what it optimises.", dataset))
    with torch.no_grad():
        second = classifier(x)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        flags.append(flag("randomized-outputs", "two forward passes of the same images gave different logits: "
                          "the attack needs an expectation over the randomness (EOT).", dataset))
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(classifier(x), y, reduction="sum")
        gradient, = torch.autograd.grad(loss, x, allow_unused=True)
    zero = len(x) if gradient is None else int((gradient.flatten(1).abs().amax(1) == 0).sum())
    if zero and not adaptive:
        flags.append(flag("zero-gradients", f"the loss has a zero input gradient at {zero} of {len(x)} images: "
                          f"gradient attacks cannot move them (gradient masking?).", dataset))
    return flags


def check_results(results: dict, defense=None, attack=None, adaptive_attacks=()) -> list[dict]:
    """The flags a finished run raises (``results``: dataset -> clean_acc, robust_acc by eps; the
    defense and attack objects it ran with, and the adaptive attacks that ran beside)."""
    flags = []
    for name, result in results.items():
        for eps, robust in result.get("robust_acc", {}).items():
            if robust is not None and result["clean_acc"] is not None and robust > result["clean_acc"]:
                flags.append(flag("robust-above-clean", f"robust accuracy at {eps} ({100 * robust:.1f}%) is above "
                                  f"clean accuracy ({100 * result['clean_acc']:.1f}%).", name))
    if isinstance(defense, TestTimeDefense) and attack is not None and not attack.adaptive and not adaptive_attacks:
        flags.append(flag("test-time-defense", f"{defense.name} runs at test time and {attack.name} is not "
                          f"adaptive: this is an upper bound; report an adaptive attack beside it."))
    return flags
