"""How the commands (``train.py``, ``python -m jssl.visualize``) end on a user error.

Exactly one ``error: <message>`` line on stderr and exit status 1, no
traceback: the message names the problem and the fix. Anything that is not a
user error is a bug and keeps its traceback; ``--traceback`` (or ``-v 1``)
shows it for user errors too.
"""

from __future__ import annotations

import argparse
import sys


def one_line(message: object) -> str:
    """The message with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(message).split())


def print_error(message: object) -> None:
    """Writes the one ``error:`` line to stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are the commands' one ``error:`` line and exit status 1
    (``python -m jssl.visualize``, ``jssl.report``, ``jssl.export``, ``jssl.data.prepare``)."""

    def error(self, message):
        print_error(f"{message}; see {self.prog} --help")
        sys.exit(1)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix (bad config, data, workdir, a diverged run)."""
    from jssl.checkpoint import CheckpointError
    from jssl.errors import UserError  # DataError, ConfigError, ConfigMismatchError, ...
    from jssl.trainer import NonFiniteError

    return (UserError, CheckpointError, NonFiniteError)
