"""What every command line of the project shares: one-line errors, exit code 2, ``--debug``.

Every ``python -m ...`` entry point (``languages``, ``hooks.constructions``, ``trained_models.*``,
``analyses.*``) builds its parser with :class:`ArgumentParser` and wraps its ``main`` with
:func:`cli`, so that a bad argument or a bad input file ends the same way everywhere:

* one line on stderr, ``PROG: error: <what was wrong, naming the argument and the value>``,
* exit code 2 (the code argparse uses for usage errors), no traceback;
* ``--debug`` anywhere on the command line shows the traceback instead.

This module lives in :mod:`languages` because that is the one package every other one imports
(and it stays free of torch). The argparse ``type=`` helpers (:func:`positive_int`, ...) reject
zero or negative counts at parse time, with the argument's name in the message.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
from typing import Any, Callable, Optional, Sequence

EXIT_USAGE = 2
DEBUG_FLAG = "--debug"


class UsageError(ValueError):
    """A bad argument value or input file, reported as one line with exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (no usage block) and whose help lists
    ``--debug`` and each argument's default."""

    def __init__(self, *args: Any, show_defaults: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._show_defaults = show_defaults
        self.add_argument(DEBUG_FLAG, action="store_true", help="on an error, show the traceback")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self) -> str:
        if self._show_defaults:
            for a in self._actions:
                d = a.default
                if not a.option_strings or d is None or d is False or d is argparse.SUPPRESS or d == []:
                    continue
                if a.help is None:
                    a.help = "default: %(default)s"
                elif a.help is not argparse.SUPPRESS and "default" not in a.help:
                    a.help += " (default: %(default)s)"
        return super().format_help()


def one_line(e: BaseException) -> str:
    """An exception as one line: its message with newlines folded (the type name when it has none)."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.split())
    if isinstance(e, KeyError):
        text = f"missing key {text}"
    return text or type(e).__name__


def cli(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate ``main(argv)``: a bad input (``ValueError``, ``LookupError``, ``OSError``,
    ``TypeError`` or ``SystemExit`` with a message) becomes one line on stderr and exit code 2
    (returned, so tests can call ``main(argv)`` in-process); ``--debug`` re-raises."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[Sequence[str]] = None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = DEBUG_FLAG in argv
            try:
                return main(argv)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    return int(e.code or 0)
                if debug:
                    raise
                return _fail(prog, str(e.code), hint=False)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except (ValueError, LookupError, OSError, TypeError, ArithmeticError, RuntimeError) as e:
                if debug:
                    raise
                return _fail(prog, one_line(e), hint=not isinstance(e, UsageError))

        return run

    return wrap


def _fail(prog: str, message: str, hint: bool) -> int:
    message = " ".join(message.split())
    if message.startswith(f"{prog}: error: "):
        message = message[len(f"{prog}: error: "):]
    print(f"{prog}: error: {message}{' (--debug shows the traceback)' if hint else ''}", file=sys.stderr)
    return EXIT_USAGE


# --------------------------------------------------------------------------- argparse types


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return x


def _checked(parse: Callable[[str], Any], ok: Callable[[Any], bool], need: str, doc: str) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        x = parse(text)
        if not ok(x):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return x

    check.__doc__ = f"argparse ``type``: {doc}."
    return check


positive_int = _checked(_int, lambda x: x >= 1, "a positive integer", "an integer >= 1")
nonnegative_int = _checked(_int, lambda x: x >= 0, ">= 0", "an integer >= 0")
positive_float = _checked(_float, lambda x: x > 0, "positive", "a finite number > 0")
nonnegative_float = _checked(_float, lambda x: x >= 0, ">= 0", "a finite number >= 0")
probability = _checked(_float, lambda x: 0 <= x <= 1, "in [0, 1]", "a number in [0, 1]")


def out_dir(text: str) -> str:
    """argparse ``type`` for ``--out``: a non-empty path (``""`` would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text
