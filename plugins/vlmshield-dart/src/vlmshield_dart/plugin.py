"""vlmshield-dart's registrations: the domain adaptation network's architecture, the UDA trainer and its methods,
DART (a method of the built-in distillation trainer), the URDA protocols and the world models."""

from __future__ import annotations

from pathlib import Path

from vlmshield.api import hookimpl, packaged_cards

from .dart import DART
from .network import ARCHITECTURE
from .protocols import PROTOCOLS
from .uda import DANN, DANNAT, MDD, AdaptationTrainer, SourceOnly, SourceOnlyAT

#: The world models: a DANN teacher of world-da/palette and its DART student (packaged classifiers).
WEIGHTS = Path(__file__).parent / "weights"


@hookimpl
def register_architectures(register):
    register(ARCHITECTURE)


@hookimpl
def register_trainers(register):
    register(AdaptationTrainer)


@hookimpl
def register_defenses(register):
    register(SourceOnly, DANN, MDD, SourceOnlyAT, DANNAT, DART)


@hookimpl
def register_protocols(register):
    register(*PROTOCOLS)


@hookimpl
def register_models(register):
    cards = packaged_cards(WEIGHTS, license="MIT")
    if cards:  # a checkout whose models are not trained yet registers none
        register(*cards)
