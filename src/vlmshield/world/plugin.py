"""The world as a built-in plugin: its datasets, its shipped models, and the ``world`` and ``demo`` commands."""

from __future__ import annotations

from vlmshield.api import hookimpl

from .commands import COMMANDS
from .data import ENTRIES
from .models import shipped_cards


@hookimpl
def register_datasets(register):
    for entry in ENTRIES:
        register(entry)


@hookimpl
def register_models(register):
    for card in shipped_cards():
        register(card)


@hookimpl
def register_commands(register):
    for command in COMMANDS:
        register(command)
