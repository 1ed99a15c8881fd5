"""The world as a built-in plugin: its datasets, its shipped models, and the ``world`` and ``demo`` commands."""

from __future__ import annotations

from vlmshield.api import hookimpl

from . import domains
from .commands import COMMANDS
from .data import ENTRIES
from .models import shipped_cards


@hookimpl
def register_datasets(register):
    register(*ENTRIES, domains.ENTRY)


@hookimpl
def register_models(register):
    register(*shipped_cards())


@hookimpl
def register_commands(register):
    register(*COMMANDS)
