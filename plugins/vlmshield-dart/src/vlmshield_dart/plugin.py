"""vlmshield-dart's registrations: the domain adaptation network's architecture."""

from __future__ import annotations

from vlmshield.api import hookimpl

from .network import ARCHITECTURE


@hookimpl
def register_architectures(register):
    register(ARCHITECTURE)
