"""Errors that speak to the user.

Every error caused by what the user asked for (a name, a parameter, an input, a file) is a
``VlmshieldError``: its message is one complete sentence, and the CLI prints it on one line and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VlmshieldError(Exception):
    """An error in what the user asked for; the message is meant to be shown as it is.

    A DataLoader worker re-raises an error in the main process as its type called with the formatted
    traceback; a vlmshield error keeps only its own sentence (the traceback's last line), so that it still
    reads as one line."""

    def __init__(self, *args):
        if args and isinstance(args[0], str) and args[0].startswith("Caught ") and "Traceback" in args[0]:
            args = (args[0].rstrip().splitlines()[-1].partition(": ")[2] or args[0], *args[1:])
        super().__init__(*args)


class UnknownNameError(VlmshieldError, LookupError):
    """A name that no registry knows (an attack, a dataset, a model, ...)."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class ContestedNameError(UnknownNameError):
    """A name that two or more plugin distributions claim: none of them is used until the user chooses one."""


class ParameterError(VlmshieldError, ValueError):
    """A parameter that is malformed or out of range."""


class InputError(VlmshieldError, ValueError):
    """Images or labels of the wrong shape, dtype or range."""


class DataError(VlmshieldError):
    """A dataset that is missing, empty or unreadable."""


class PluginError(VlmshieldError):
    """A plugin that failed to load or registered something invalid."""


def error_summary(error: BaseException) -> str:
    """'TypeName: first line of the message', to quote a library's error inside one sentence of ours."""
    message = str(error)
    return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' Did you mean ...?' for the closest candidates, or '' when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
