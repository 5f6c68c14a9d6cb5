"""Train and evaluate a jssl method.

    python train.py                                   # SimCLR on scikit-learn's digits
    python train.py --config=configs/simclr.py:cifar10 --workdir=/tmp/run --config.batch_size=256
    python train.py --config=configs/simclr.py:digits --workdir=W --mode=eval

Running the same command with the same --workdir resumes from its latest
checkpoint. Config files are Python code that runs: only load configs you trust.

The whole config and the workdir are checked before any data or device work
(jssl/validation.py). A bad flag, config, workdir or data set ends in exactly
one `error:` line on stderr and exit status 1; --traceback (or -v 1) shows the
traceback instead.
"""

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # so config files can `from configs import common`

_DEFAULT_CONFIG = os.path.join(_HERE, "configs", "simclr.py")
# default=None: the default config is added by parse_flags, so that errors in overrides
# (--config.x=...) are reported by parse_flags instead of at import time.
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    f"Config file[:preset,modifiers] (default {_DEFAULT_CONFIG}).",
    lock_config=True,
)
_CONFIG_HELP = "check --config=FILE[:ARG] (e.g. configs/simclr.py:digits)"

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: ./runs/<method>_<preset>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (and evaluate), or eval only.")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "On an error, show the traceback instead of one line (as -v 1 does)."
)
# Several processes (jssl/distributed.py): all run the same command. Without these flags,
# JAX's cluster auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes) or one process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordination service."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds to wait for every process to join."
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds without a heartbeat after which a process is dead."
)


class CommandLineError(ValueError):
    """A bad flag, override or config file; the message is one line naming the fix."""


def default_workdir(config_arg: str | None, method: str) -> str:
    preset = (config_arg or "").split(":", 1)[1] if ":" in (config_arg or "") else "digits"
    return os.path.join("runs", f"{method}_{preset.replace(',', '_') or 'digits'}")


def _fail(message) -> None:
    """The one way train.py ends on a user error: one `error:` line on stderr, exit status 1.

    (The same line as jssl.cli.print_error, without importing JAX first.)
    """
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(1)


def _wants_traceback(argv) -> bool:
    """--traceback or -v/--verbosity >= 1 on the command line (read before absl parses it)."""
    show, args = False, list(argv[1:])
    for i, a in enumerate(args):
        if a in ("--traceback", "-traceback", "--traceback=true", "--traceback=True"):
            show = True
        elif a in ("--notraceback", "-notraceback") or a.lower() == "--traceback=false":
            show = False
        else:
            value = None
            for name in ("-v", "--v", "-verbosity", "--verbosity"):
                if a == name and i + 1 < len(args):
                    value = args[i + 1]
                elif a.startswith(name + "="):
                    value = a.split("=", 1)[1]
            if value is not None:
                try:
                    show = int(value) >= 1
                except ValueError:
                    pass
    return show


def _show_traceback() -> bool:
    return _TRACEBACK.value or flags.FLAGS["verbosity"].value >= 1


def _root_cause(e: BaseException) -> BaseException:
    while (inner := e.__cause__ or e.__context__) is not None and inner is not e:
        e = inner
    return e


def _config_arg(argv) -> str:
    args = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(("--config=", "-config="))]
    return args[-1] if args else _DEFAULT_CONFIG


def _forget_overrides() -> None:
    """Drops the --config.* flags a previous parse defined, so that parsing can run again
    in one process (the fuzz test parses hundreds of command lines)."""
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)


_GIVEN = {"config": False}  # whether the command line named a config or an override


def parse_args(argv) -> list[str]:
    """absl's flag parsing; bad flags and config files that raise become CommandLineError."""
    _GIVEN["config"] = any(a.startswith(("--config", "-config")) for a in argv[1:])
    if not any(a.startswith(("--config=", "-config=")) for a in argv[1:]):
        argv = [argv[0], f"--config={_DEFAULT_CONFIG}", *argv[1:]]
    _forget_overrides()
    saved_argv, sys.argv = sys.argv, list(argv)  # ml_collections reads overrides from sys.argv
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        if "Error whilst parsing config file" in message:  # ml_collections wraps the traceback
            last = [line.strip() for line in message.splitlines() if line.strip()][-1]
            raise CommandLineError(
                f"the config file {_config_arg(argv)} raised {last}; {_CONFIG_HELP}"
            ) from e
        raise CommandLineError(f"{message}; see --helpfull") from e
    except Exception as e:
        in_config = any(f.name == "get_config" for f in traceback.extract_tb(e.__traceback__))
        if isinstance(e, (AttributeError, KeyError)) and not in_config:
            raise CommandLineError(  # ml_collections: an override names no field
                f"a --config.<field>=value override names a field that does not exist ({e}); "
                f"the fields are those of the config file {_config_arg(argv)}"
            ) from e
        # the config file itself raised (config files are code)
        raise CommandLineError(
            f"the config file {_config_arg(argv)} raised {type(e).__name__}: {e}; {_CONFIG_HELP}"
        ) from e
    finally:
        sys.argv = saved_argv


def load_config(argv=None):
    """The parsed config (after parse_args); a config file that cannot be loaded raises
    CommandLineError."""
    try:
        config = _CONFIG.value
        config.method  # noqa: B018 -- a config file that failed to load raises here
    except OSError as e:
        lines = [line.strip() for line in str(_root_cause(e)).splitlines() if line.strip()]
        raise CommandLineError(
            f"cannot load the config file {_config_arg(argv or sys.argv)}: {lines[-1]}; "
            f"{_CONFIG_HELP}"
        ) from e
    return config


def parse_flags(argv):
    """parse_args with its errors as one `error:` line and exit status 1."""
    try:
        return parse_args(argv)
    except CommandLineError as e:
        if _wants_traceback(argv):
            raise
        _fail(e)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}: flags are --name=value; see --helpfull")
    try:
        config = load_config()
    except CommandLineError as e:
        if _show_traceback():
            raise
        _fail(e)
    from jssl import cli, trainer  # after flag parsing: importing JAX is slow

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; -v 0 brings it back
    if not _show_traceback():
        from jssl import checkpoint

        checkpoint.hide_background_errors()  # a failed save ends in one error line instead
    workdir = _WORKDIR.value or default_workdir(
        flags.FLAGS["config"].serialize().split("=", 1)[-1], config.method
    )
    print(f"workdir: {os.path.abspath(workdir)}", flush=True)
    try:
        from jssl import distributed

        distributed.initialize(
            _COORDINATOR.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            timeout=_JOIN_TIMEOUT.value,
            heartbeat_timeout=_HEARTBEAT.value,
        )
        # Both check the whole config and the workdir first (jssl.validation), then the data.
        if _MODE.value == "eval":
            if not _GIVEN["config"] and os.path.isfile(os.path.join(workdir, "config.json")):
                from jssl.experiment import saved_config

                config = saved_config(workdir)  # no --config given: the run's own
                print("config: the run's config.json", flush=True)
            trainer.evaluate_checkpoint(config, workdir)
        elif trainer.train_and_evaluate(config, workdir)["stopped"] == "Ctrl-C":
            sys.exit(130)  # saved; the trainer printed where and how to resume
    except cli.user_error_types() as e:
        if _show_traceback():
            raise
        from jssl.checkpoint import CheckpointError
        from jssl.metrics_log import MetricsWriteError

        if isinstance(e, (CheckpointError, MetricsWriteError)):  # writes may still be pending
            print(f"error: {cli.one_line(e)}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            # The run's own files are closed (the trainer's finally blocks ran); the
            # interpreter's shutdown would let orbax's threads print a traceback per write.
            os._exit(1)
        _fail(e)
    except KeyboardInterrupt:  # a Ctrl-C outside the train loop, or the loop's second one
        if _show_traceback():
            raise
        print(
            "interrupted (Ctrl-C); the checkpoints already complete are kept: rerun the same "
            "command to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
