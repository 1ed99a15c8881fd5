"""vlmshield-dart's registrations: the domain adaptation network's architecture, the UDA trainer and its methods."""

from __future__ import annotations

from vlmshield.api import hookimpl

from .network import ARCHITECTURE
from .uda import DANN, MDD, AdaptationTrainer, SourceOnly


@hookimpl
def register_architectures(register):
    register(ARCHITECTURE)


@hookimpl
def register_trainers(register):
    register(AdaptationTrainer)


@hookimpl
def register_defenses(register):
    register(SourceOnly, DANN, MDD)
