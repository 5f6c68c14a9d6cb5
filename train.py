"""Train and evaluate a jssl method.

    python train.py                                   # SimCLR on scikit-learn's digits
    python train.py --config=configs/simclr.py:cifar10 --workdir=/tmp/run --config.batch_size=256
    python train.py --config=configs/simclr.py:digits --workdir=W --mode=eval

Running the same command with the same --workdir resumes from its latest
checkpoint. Config files are Python code that runs: only load configs you trust.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # so config files can `from configs import common`

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(_HERE, "configs", "simclr.py"),
    "Config file[:preset,modifiers].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: ./runs/<method>_<preset>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (and evaluate), or eval only.")


def default_workdir(config_arg: str | None, method: str) -> str:
    preset = (config_arg or "").split(":", 1)[1] if ":" in (config_arg or "") else "digits"
    return os.path.join("runs", f"{method}_{preset.replace(',', '_') or 'digits'}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from jssl import data, trainer  # after flag parsing: importing JAX is slow
    from jssl.checkpoint import CheckpointError
    from jssl.errors import UserError

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; -v 0 brings it back
    config = _CONFIG.value
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
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
