"""What an evaluator is: it turns a model and a batch of a dataset into per-sample metric values.

The evaluation engine draws the samples, builds the evaluator's classifier once per dataset, wraps it in
a test-time defense when there is one, and averages what ``score`` returns. An evaluator declares the
metrics it returns, the kind of attack it takes (an evasion ``Attack``, a ``BackdoorAttack``, or none),
the data it reads (``takes``: labelled images for the classifiers, image-caption pairs for ``retrieval``),
the counting conventions of robust accuracy it knows, and how a leaderboard of its numbers is ranked
(``rank_by``).

A ``whole_set`` evaluator scores the evaluated subset as a whole rather than batch by batch (retrieval
ranks every image against every caption of the evaluated set): the engine builds its classifier with the
subset's indices (``classifier(model, data, indices=...)``) and calls ``score`` once, on the whole subset
in that order, as one batch (so one seed, and a resumed run redoes it); the evaluator chunks its own
forward passes. Its per-sample values need not be one per image: ``retrieval`` returns one per image for
image-to-text recall and one per caption for text-to-image recall, and the engine averages each list.

Counting conventions (``COUNTINGS``), which images robust accuracy counts:

- ``"clean-correct"`` (AutoAttack, RobustBench, RobustVLM): only the images the classifier gets right
  clean are attacked; robust accuracy is the share of all images right clean and under attack;
- ``"all"`` (TeCoA, PMG-AFT, TTC): every image is attacked; robust accuracy is the share of all images
  classified right after the attack.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from .attack import Attack
from .params import Configurable

COUNTINGS = ("clean-correct", "all")


class Evaluator(Configurable, abc.ABC):
    """Turns a model and a dataset into per-sample metric values."""

    kind: ClassVar[str] = "evaluator"
    #: Names of the metrics ``score`` returns, as they appear in records.
    metrics: ClassVar[tuple[str, ...]] = ()
    #: The metrics that do not depend on the attack (measured once when a protocol sweeps attacks).
    clean_metrics: ClassVar[tuple[str, ...]] = ("clean_acc",)
    #: (metric, "max" | "min"): what ranks a leaderboard of its runs, and which way, unless the protocol says.
    rank_by: ClassVar[tuple[str, str]] = ("robust_acc", "max")
    #: The attack class this evaluator uses (Attack, BackdoorAttack), or None if it takes none.
    attack_type: ClassVar[type | None] = Attack
    #: Whether an attack is required (an attack success rate without a backdoor means nothing).
    needs_attack: ClassVar[bool] = False
    #: The data it reads: a key of ``vlmshield.core.data.DATA_TYPES`` (labelled images for classifiers).
    takes: ClassVar[str] = "labelled"
    #: The counting conventions (``COUNTINGS``) ``score`` takes as ``counting=``; empty: it takes none,
    #: and only the default, "clean-correct", can be asked for.
    countings: ClassVar[tuple[str, ...]] = ()
    #: Whether ``score`` needs the whole evaluated subset at once (module docstring); the classifier then
    #: also receives ``indices=``, the subset, in the order ``score`` sees it.
    whole_set: ClassVar[bool] = False

    @abc.abstractmethod
    def classifier(self, model: nn.Module, data) -> nn.Module:
        """The module to evaluate on ``data``: [0, 1] images -> logits over ``data.classnames`` (over the
        evaluated subset's captions for ``retrieval``)."""

    @abc.abstractmethod
    def score(self, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, data,
              attack=None, attack_model: nn.Module | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """Per-sample values (1.0/0.0, or NaN where a sample does not count) for each metric.

        An evaluator that declares ``countings`` also receives ``counting=`` (one of them)."""

    def applies_to(self, data, attack=None) -> str | None:
        """Why this evaluator cannot score ``data`` with ``attack`` (one sentence), or None when it can.
        The engine skips such a dataset and says so in the record (the ``asr`` evaluator on a task whose
        classes do not contain the backdoor's target)."""
        return None
