"""What a defense is.

A defense's ``kind`` says what it consumes and what it produces:

- ``finetune``: a VLM (and training data) in, a more robust VLM out (TeCoA, FARE, HPT-GPD);
- ``backdoor-removal``: a poisoned VLM and image-text pairs in, a cleaned VLM out (PAR);
- ``domain-adaptation``: a labelled source and an unlabelled target domain in, a classifier out (DART);
- ``test-time``: a classifier in, a wrapped classifier out that defends each input at inference (TTC).

The first three are ``TrainingDefense`` subclasses and implement ``fit``; test-time defenses are
``TestTimeDefense`` subclasses and implement ``wrap``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from torch import nn

from .errors import PluginError
from .params import Configurable

TRAINING_KINDS = ("finetune", "backdoor-removal", "domain-adaptation")
DEFENSE_KINDS = (*TRAINING_KINDS, "test-time")


class Defense(Configurable, abc.ABC):
    """Base of all defenses; subclass TrainingDefense or TestTimeDefense."""

    kind: ClassVar[str] = "defense"
    #: One of DEFENSE_KINDS.
    defense_kind: ClassVar[str] = ""
    #: The paper the defaults come from (a citation or URL).
    paper: ClassVar[str] = ""

    @classmethod
    def check_class(cls) -> None:
        super().check_class()
        if cls.defense_kind not in DEFENSE_KINDS:
            raise PluginError(
                f"defense {cls.name!r} has defense_kind {cls.defense_kind!r}; "
                f"expected one of {', '.join(DEFENSE_KINDS)}"
            )
        base = TestTimeDefense if cls.defense_kind == "test-time" else TrainingDefense
        if not issubclass(cls, base):
            raise PluginError(f"defense {cls.name!r} of kind {cls.defense_kind!r} must subclass {base.__name__}")


class TrainingDefense(Defense):
    """A defense that trains: fine-tuning, backdoor removal or domain adaptation."""

    defense_kind: ClassVar[str] = "finetune"

    @abc.abstractmethod
    def fit(self, model: nn.Module, data, **options) -> nn.Module:
        """Train ``model`` on ``data`` (the shape of ``data`` depends on the kind) and return the result."""


class TestTimeDefense(Defense):
    """A defense applied at inference, around an existing classifier."""

    __test__ = False  # not a pytest test class, whatever its name says
    defense_kind: ClassVar[str] = "test-time"
    #: Whether the wrapped classifier draws random numbers (its numbers need EOT-style attacks).
    randomized: ClassVar[bool] = False

    @abc.abstractmethod
    def wrap(self, classifier: nn.Module) -> nn.Module:
        """Return a module with the classifier's interface ([0, 1] images -> logits), defended."""
