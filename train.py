"""Train and evaluate a jssl method.

    python train.py                                   # SimCLR on scikit-learn's digits
    python train.py --config=configs/simclr.py:cifar10 --workdir=/tmp/run --config.batch_size=256
    python train.py --config=configs/simclr.py:digits --workdir=W --mode=eval

Running the same command with the same --workdir resumes from its latest
checkpoint. Config files are Python code that runs: only load configs you trust.
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


def default_workdir(config_arg: str | None, method: str) -> str:
    preset = (config_arg or "").split(":", 1)[1] if ":" in (config_arg or "") else "digits"
    return os.path.join("runs", f"{method}_{preset.replace(',', '_') or 'digits'}")


def _fail(message: str) -> None:
    """Prints a one-line error (no traceback) and exits 1."""
    message = " ".join(str(message).split())
    if flags.FLAGS.is_parsed():  # else absl logging would add a "before flag parsing" warning
        logging.error("%s", message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _root_cause(e: BaseException) -> BaseException:
    while (inner := e.__cause__ or e.__context__) is not None and inner is not e:
        e = inner
    return e


def _config_arg(argv) -> str:
    args = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(("--config=", "-config="))]
    return args[-1] if args else _DEFAULT_CONFIG


def parse_flags(argv):
    """absl's flag parsing, with one-line errors for bad flags and config files that raise."""
    if not any(a.startswith(("--config=", "-config=")) for a in argv[1:]):
        argv = [argv[0], f"--config={_DEFAULT_CONFIG}", *argv[1:]]
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        if "Error whilst parsing config file" in message:  # ml_collections wraps the traceback
            last = [line.strip() for line in message.splitlines() if line.strip()][-1]
            _fail(f"the config file {_config_arg(argv)} raised {last}; {_CONFIG_HELP}")
        _fail(f"{message}; see --helpfull")
    except Exception as e:
        in_config = any(f.name == "get_config" for f in traceback.extract_tb(e.__traceback__))
        if isinstance(e, (AttributeError, KeyError)) and not in_config:
            _fail(  # ml_collections: an override names no field
                f"a --config.<field>=value override names a field that does not exist ({e}); "
                f"the fields are those of the config file {_config_arg(argv)}"
            )
        # the config file itself raised (config files are code)
        _fail(f"the config file {_config_arg(argv)} raised {type(e).__name__}: {e}; {_CONFIG_HELP}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = _CONFIG.value
        config.method  # noqa: B018 -- a config file that failed to load raises here
    except OSError as e:
        lines = [line.strip() for line in str(_root_cause(e)).splitlines() if line.strip()]
        _fail(f"cannot load the config file {_config_arg(sys.argv)}: {lines[-1]}; {_CONFIG_HELP}")
    from jssl import data, trainer  # after flag parsing: importing JAX is slow
    from jssl.checkpoint import CheckpointError
    from jssl.errors import UserError

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; -v 0 brings it back
    workdir = _WORKDIR.value or default_workdir(
        flags.FLAGS["config"].serialize().split("=", 1)[-1], config.method
    )
    print(f"workdir: {os.path.abspath(workdir)}", flush=True)
    try:
        if _MODE.value == "eval":
            trainer.evaluate_checkpoint(config, workdir)
        else:
            trainer.train_and_evaluate(config, workdir)
    except (UserError, data.DataError, CheckpointError, trainer.NonFiniteError) as e:
        _fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
