"""One error style for every tool.

A mistake the user can fix (a missing file or folder, a bad option or config, nothing to resume, no
token, the wrong kind of folder) is a `UserError` whose message says what was wrong and what to do.
`run_tool` (inside each tool's `main`, made by `@console_tool`) prints it as one or two lines on
stderr and returns a non-zero exit code; `--debug` on any tool's command line shows the traceback
instead. Anything else is a defect of ours: one line that names it and asks for a report, the
traceback again only with `--debug`.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_HELP = "Show the full traceback when the tool stops with an error."

# The tools' log lines: the package's INFO records (startup facts: parameters, pairs kept by each
# filter, batching, checkpoints saved or resumed) on stderr.
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# Exit codes: 2 a user error (as argparse), 1 a defect of ours, 130 interrupted by Ctrl-C.
USER_ERROR_EXIT = 2
DEFECT_EXIT = 1
INTERRUPTED_EXIT = 130


class UserError(Exception):
    """What was wrong and what to do, in a line or two (no traceback unless `--debug`)."""


# Library errors that only ever mean a wrong path or value given by the user, shown like UserError.
USER_ERROR_TYPES: tuple[type[BaseException], ...] = (
    UserError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def console_tool(body=None, *, log_format: str = LOG_FORMAT):
    """Decorator: a tool's body, `body(argv) -> exit code` (None: 0), becomes its console entry
    point `main(argv=None) -> int`: INFO logging in `log_format`, and the one error style
    (`run_tool`). `@console_tool` or `@console_tool(log_format=...)`."""

    def decorate(body):
        @functools.wraps(body)
        def main(argv: Sequence[str] | None = None) -> int:
            logging.basicConfig(level=logging.INFO, format=log_format)
            return run_tool(body, argv)

        return main

    return decorate if body is None else decorate(body)


def run_tool(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a tool's `main(argv)` with the one error style; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    if debug:
        argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_EXIT
    except USER_ERROR_TYPES as err:
        if debug:
            raise
        print(f"error: {_message(err)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except Exception as err:  # a defect: say so in one line, traceback on request
        if debug:
            raise
        print(
            f"internal error: {type(err).__name__}: {_message(err)}\n"
            f"Rerun with {DEBUG_FLAG} for the traceback and report it with the command you ran.",
            file=sys.stderr,
        )
        return DEFECT_EXIT


def _message(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, OSError) and err.filename and err.strerror and err.filename not in text:
        text = f"{err.strerror}: {err.filename}"
    return text or type(err).__name__
