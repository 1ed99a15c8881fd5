"""The ``vlmshield`` command line.

Every subcommand is a ``Command`` registered through the ``register_commands`` hook; vlmshield's own
are registered by ``vlmshield.cli.commands``, a built-in plugin, and plugins add theirs the same way. A
command name two distributions claim is run by its qualified name, ``vlmshield DIST:NAME``.
A mistake in what the user typed is one line on stderr and exit status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from vlmshield.api import Command, UsageError, VlmshieldError, get_host

from .._version import __version__


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------------- main
def build_parser() -> Parser:
    parser = Parser(prog="vlmshield", description="A plugin-based zoo of defenses for vision-language models.")
    parser.add_argument("--version", action="version", version=f"vlmshield {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands = get_host().registries["command"]
    contested = commands.contested()
    for registration in commands:
        command: Command = registration.obj
        name = f"{registration.qualifier}:{command.name}" if command.name in contested else command.name
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"vlmshield: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit status. Warnings show as one line each while it runs."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():  # restores the process's warning display and filters afterwards
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "run", None) is None:
            raise UsageError("no command given (see `vlmshield --help`)")
        return args.run(args) or 0
    except VlmshieldError as error:
        if debug:
            traceback.print_exc()
        print(f"vlmshield: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: say so in one line unless asked for the traceback
        if debug:
            raise
        print(f"vlmshield: internal error: {type(error).__name__}: {error} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
