"""vlmshield-dart's registrations: the domain adaptation network's architecture, the UDA trainer and its methods,
DART (a method of the built-in distillation trainer) and the URDA protocols."""

from __future__ import annotations

from vlmshield.api import hookimpl

from .dart import DART
from .network import ARCHITECTURE
from .protocols import PROTOCOLS
from .uda import DANN, DANNAT, MDD, AdaptationTrainer, SourceOnly, SourceOnlyAT


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
