"""The TTC plugin: the ``ttc`` and ``random-noise`` test-time defenses and the ``ttc-aware`` attack."""

from __future__ import annotations

from vlmshield.api import hookimpl

from .adaptive import TTCAware
from .noise import RandomNoise
from .ttc import TTC


@hookimpl
def register_defenses(register):
    register(TTC, RandomNoise)


@hookimpl
def register_attacks(register):
    register(TTCAware)
