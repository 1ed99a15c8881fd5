"""vlmshield-jpeg's registrations: the ``jpeg`` defense, its adaptive attack ``diff-jpeg``, the ``jpeg-convnet``
architecture and the packaged world model (``weights/``)."""

from __future__ import annotations

from pathlib import Path

from vlmshield.api import hookimpl, packaged_cards

from .attack import DiffJPEG
from .defense import JPEG
from .network import ARCHITECTURE

#: The packaged world model: a jpeg-convnet trained on world shapes with JPEG augmentation.
WEIGHTS = Path(__file__).parent / "weights"


@hookimpl
def register_defenses(register):
    register(JPEG)


@hookimpl
def register_attacks(register):
    register(DiffJPEG)


@hookimpl
def register_architectures(register):
    register(ARCHITECTURE)


@hookimpl
def register_models(register):
    cards = packaged_cards(WEIGHTS, license="MIT")
    if cards:  # a checkout whose model is not trained yet registers none
        register(*cards)
