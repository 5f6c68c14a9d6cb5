"""How the commands (``train.py``, ``python -m jssl.visualize``) end on a user error.

Exactly one ``error: <message>`` line on stderr and exit status 1, no
traceback: the message names the problem and the fix. Anything that is not a
user error is a bug and keeps its traceback; ``--traceback`` (or ``-v 1``)
shows it for user errors too.
"""

from __future__ import annotations

import argparse
import os
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
    from jssl.metrics_log import MetricsWriteError
    from jssl.trainer import NonFiniteError

    return (UserError, CheckpointError, MetricsWriteError, NonFiniteError)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_config_flags(argv: list[str], *, usage: str, define=None, config_required: bool = True):
    """absl flags with ``--config=FILE[:PRESET]`` and its ``--config.x=y`` overrides, as
    train.py reads them; returns (config or None, the flag values), or None after one
    ``error:`` line naming ``usage`` (a bad flag, or a config file that raised).

    ``define(flag_values)`` defines the command's other flags on the FlagValues it gets.
    """
    from absl import flags
    from ml_collections import config_flags

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # so that config files can `from configs import common`
    fv = flags.FlagValues()
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Config file[:preset].", flag_values=fv
    )
    if define is not None:
        define(fv)
    saved, sys.argv = sys.argv, list(argv)  # ml_collections reads the overrides from sys.argv
    try:
        rest = fv(list(argv))
        config = config_flag.value
    except Exception as e:  # absl's flag errors and a config file that raised
        print_error(f"{e}; usage: {usage}")
        return None
    finally:
        sys.argv = saved
    if len(rest) > 1:
        print_error(f"unexpected arguments {rest[1:]}: flags are --name=value; usage: {usage}")
        return None
    if config is None and config_required:
        print_error(f"give --config=FILE[:PRESET]; usage: {usage}")
        return None
    return config, fv
