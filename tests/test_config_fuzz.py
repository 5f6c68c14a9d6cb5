"""Fuzzed command lines: random overrides of the configs' own fields through train.py's
flag parser and the config validation. Each command line either validates or ends in
exactly one `error:` line (exit status 1), never a traceback.

In process for speed (hypothesis, seeded and bounded), plus a handful through train.py
as subprocesses.
"""

import contextlib
import io
import os
import subprocess
import sys
import time

import ml_collections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jssl import cli, validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402

CONFIG_FILES = (
    "configs/simclr.py:digits,smoke",
    "configs/dino.py:digits,smoke",
    "configs/scan.py:digits,smoke",
    "configs/jigsaw.py:digits,smoke",
    "configs/vae.py:digits,smoke",
)


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, str]:
    """Every field (nested blocks included) -> the kind of its value."""
    out = {}
    for key in sorted(config.keys()):
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out[prefix + key] = "dict"
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = {bool: "bool", int: "int", float: "float", str: "str"}.get(
                type(value), "tuple"
            )
    return out


def _fields(config_file: str) -> dict[str, str]:
    train.parse_args(["train.py", f"--config={config_file}"])
    return _leaves(train.load_config())


FIELDS = {f: _fields(f) for f in CONFIG_FILES}

# Values as a user would type them: wrong types, zero, negative, huge, empty strings,
# unknown names, names from other registries, NaN and infinities, tuples and dicts.
TYPED = (
    "0", "1", "-1", "2", "-3", "7", "12", "1e9", "99999999999999999999", "-99999999999999999999",
    "0.0", "0.5", "1.5", "-0.5", "1e-30", "1e400", "nan", "inf", "-inf", "NaN", "True", "False",
    "None", "''", "", " ", "abc", "no_such_name", "resnet18", "vit_tiny", "dino", "adamw",
    "dino_adamw", "lars", "skip", "tfds", "image_folder", "output", "stage:pretext",
    "stage:nope", "()", "(0.5,)", "(1, 2)", "(0.9, 0.1)", "(0.1, 0.9)", "(nan, 1.0)", "(1, 'a')",
    "('backbone',)", "(8, 16)", "(0,)", "[1, 2]", "{}", "{'a': 1}", "/dev/null", "../../x",
)  # fmt: skip
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6)
ANY = st.one_of(
    st.sampled_from(TYPED),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    TEXT,
)
INTS = st.one_of(
    st.sampled_from((0, 1, -1, 2, 3, 4, 8, 12, 31, 32, 1000, 2**31, 10**20, -(10**20))),
    st.integers(-(10**6), 10**6),
)
FLOATS = st.one_of(
    st.sampled_from((0.0, 1.0, -1.0, 0.5, 1.5, 1e-30, 1e30, 1e400, float("nan"), float("inf"))),
    st.floats(allow_nan=True, allow_infinity=True),
)
NUMBER_TEXT = st.one_of(INTS, FLOATS).map(repr)
NAMES = st.sampled_from(
    ("", "x", "resnet18", "vit_tiny", "convnet", "dino", "simclr", "adamw", "sgd", "skip",
     "fail", "tfds", "digits", "features", "output", "auto", "hard", "soft", "stage:pretext",
     "random", "vq", "sparse", "d4", "gap")
)  # fmt: skip
TUPLES = st.lists(st.one_of(INTS, FLOATS, NAMES), max_size=4).map(lambda v: repr(tuple(v)))
# per kind of field: values of its own type (they reach the validation) or anything
VALUES = {
    "bool": st.one_of(st.sampled_from(("True", "False")), ANY),
    "int": st.one_of(INTS.map(str), INTS.map(str), ANY),
    "float": st.one_of(NUMBER_TEXT, NUMBER_TEXT, ANY),
    "str": st.one_of(NAMES, TEXT, ANY),
    "tuple": st.one_of(TUPLES, TUPLES, ANY),
    "dict": st.one_of(st.sampled_from(("{}", "{'a': 1}", "{'widths': (8,)}")), ANY),
}


@st.composite
def command_lines(draw):
    config_file = draw(st.sampled_from(CONFIG_FILES))
    kinds = FIELDS[config_file]
    fields = draw(st.lists(st.sampled_from(sorted(kinds)), min_size=1, max_size=3))
    overrides = [(f, draw(VALUES[kinds[f]])) for f in fields]
    return ["train.py", f"--config={config_file}"] + [f"--config.{f}={v}" for f, v in overrides]


def parse_and_validate(argv) -> tuple[int, str]:
    """train.py's parse and the config-only validation in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            train.parse_flags(argv)  # prints the one error line and exits 1 on a bad flag
            validation.validate_config(train.load_config(argv))
        except SystemExit as e:
            return e.code, err.getvalue()
        except cli.user_error_types() as e:
            cli.print_error(e)  # what train.py prints for it
            return 1, err.getvalue()
    return 0, err.getvalue()


def assert_one_error_or_valid(code, err, argv):
    if code == 0:
        assert err == "", (argv, err)
        return
    assert code == 1, (argv, code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert len(lines[0]) > len("error: ") and "Traceback" not in err, (argv, err)


@settings(
    max_examples=300,
    derandomize=True,  # the same command lines on every run
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(command_lines())
def _fuzz(outcomes, argv):
    code, err = parse_and_validate(argv)
    assert_one_error_or_valid(code, err, argv)
    outcomes.append(code)


def test_fuzzed_overrides_validate_or_fail_in_one_line():
    outcomes = []
    start = time.perf_counter()
    _fuzz(outcomes)
    seconds = time.perf_counter() - start
    assert len(outcomes) >= 250, len(outcomes)
    assert 0 < sum(outcomes) < len(outcomes)  # both outcomes are exercised
    assert seconds < 30, seconds


# A handful of the same kind of command lines through train.py itself.
SUBPROCESS_CASES = (
    ("configs/simclr.py:digits,smoke", ["--config.batch_size=-3", "--config.optim.b2=1e400"]),
    ("configs/simclr.py:digits,smoke", ["--config.seed=nan"]),
    ("configs/dino.py:digits,smoke", ["--config.dino.teacher_temp=-inf", "--config.model.name=''"]),
    ("configs/scan.py:digits,smoke", ["--config.stages.pretext.eval.knn_k=0"]),
    ("configs/vae.py:digits,smoke", ["--config.vae.seed_shape=(1, 'a')", "--config.num_steps=0"]),
)


def test_fuzzed_overrides_through_train_py(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = []
    for i, (config_file, overrides) in enumerate(SUBPROCESS_CASES):
        argv = ["train.py", f"--config={config_file}", *overrides]
        code, err = parse_and_validate(argv)
        assert code == 1, (argv, err)  # each case is invalid
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            *argv[1:],
            f"--workdir={tmp_path / str(i)}",
        ]
        procs.append((argv, err, subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )))  # fmt: skip
    for i, (argv, in_process, proc) in enumerate(procs):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 1, (argv, err[-2000:])
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == [in_process.strip()], (argv, err[-2000:], in_process)
        assert "Traceback" not in out + err, (argv, err[-2000:])
        assert not (tmp_path / str(i) / "checkpoints").exists()
