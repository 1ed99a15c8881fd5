"""What a ``vlmshield`` subcommand is, and what every command's options share.

A plugin adds a subcommand by registering a ``Command`` through the ``register_commands`` hook. The
helpers read the options several commands have the same way: ``--no-progress`` (``progress_flag``),
``--defense NAME --defense-params k=v`` (``defense_params``), and a run that an interruption must not
lose (``resumable``: Ctrl-C says how to resume). A mistake on the command line is a ``UsageError``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .errors import VlmshieldError
from .params import parse_params


class UsageError(VlmshieldError):
    """The command line itself is malformed."""


@dataclass(frozen=True)
class Command:
    """A ``vlmshield`` subcommand contributed by a plugin."""

    name: str
    help: str
    #: ``run(args) -> exit status`` (None means 0).
    run: Callable[[argparse.Namespace], int | None]
    #: ``add_arguments(parser)`` declares the command's arguments.
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def progress_flag(args: argparse.Namespace) -> bool | None:
    """What ``--no-progress`` asks of the progress bars: off, or the default (on at a terminal)."""
    return False if getattr(args, "no_progress", False) else None


def resumable(out, run: Callable[[], object]):
    """``run()``; on Ctrl-C, say that the same command resumes from ``out``, then stop as interrupted."""
    try:
        return run()
    except KeyboardInterrupt:
        if out:
            print(f"vlmshield: interrupted; what finished is kept in {out}; run the same command again to resume.",
                  file=sys.stderr)
        raise


def defense_params(args: argparse.Namespace) -> dict | None:
    """``--defense-params`` read against the parameters of ``--defense`` (None without them)."""
    if not getattr(args, "defense_params", None):
        return None
    if args.defense is None:
        raise UsageError("--defense-params needs --defense.")
    from .plugins import get_host

    cls = get_host().get("defense", args.defense).obj
    return parse_params(cls, args.defense_params, f"defense {cls.name!r}", cls.pixel_params)
