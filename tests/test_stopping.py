"""A run with slow steps stops within a few steps of SIGTERM, Ctrl-C or its deadline.

train.py in a subprocess with steps of about a second on a 2-core CPU (SimCLR's digits
ConvNet at 32 px, batch 256) and a run of 400 steps that logs and saves only at its end:
nothing but the bound on steps in flight (``config.steps_in_flight``, default 2) keeps
the loop near the device. Without it the loop would have dispatched most of the run by
the time the signal comes, and the save it makes then would wait for all of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from jssl.checkpoint import Checkpointer
from tests.helpers import TrainPy, records, smoke_args

SLOW = smoke_args(
    "simclr",
    "--config.augment.crop_size=32",
    "--config.batch_size=256",
    "--config.num_steps=400",
    "--config.log_every=1000",
    "--config.checkpoint_every=1000",
    "--config.eval.probe_epochs=2",
    arg="digits",
)


@pytest.fixture
def one_device_train_py(train_py):
    """train.py on one CPU device at XLA's default optimisation level (the suite's 8 fake
    devices and -O0 slow the host's dispatch as much as the steps: no queue would form)."""
    return TrainPy({**train_py.env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})


class _Output:
    """A running train.py whose stdout is read as it comes (the progress bar's \\r
    updates included) on a thread; ``wait_for(text)`` until it appears."""

    def __init__(self, train_py, *args):
        self.proc = train_py.start(*args, stderr=subprocess.PIPE)
        self.text = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := self.proc.stdout.read(1):
            self.text += chunk

    def wait_for(self, text: str, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert self.proc.poll() is None, self.text[-2000:] + self.proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> tuple[int, float, str]:
        start = time.monotonic()
        err = self.proc.stderr.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, time.monotonic() - start, err


def _saved_steps(workdir) -> list[int]:
    ckpt = Checkpointer(str(workdir))
    try:
        return sorted(ckpt.manager.all_steps())
    finally:
        ckpt.close()


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_signal_stops_a_slow_run_within_a_few_steps(one_device_train_py, tmp_path, signum):
    run = _Output(one_device_train_py, *SLOW, f"--workdir={tmp_path}")
    run.wait_for("compiled the train step")
    # Long enough for an unbounded loop to queue tens of steps ahead of the device: with
    # --config.steps_in_flight=0 the exit then came 40 s after the signal here (20 s of
    # sleep: 60 s), and this test failed; a bounded loop has 2.
    time.sleep(10.0)
    run.proc.send_signal(signum)
    code, seconds, err = run.finish()
    assert code == (0 if signum == signal.SIGTERM else 130), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    reason = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    line = next(x for x in run.text.splitlines() if "stopped at step" in x)
    assert f"({reason}): checkpoint saved in" in line and "rerun the same command" in line
    step = int(line.split("stopped at step ")[1].split()[0])
    assert _saved_steps(tmp_path) == [step]
    # The exit (the save included) comes a few step times after the signal: 6 s here.
    assert step >= 1
    assert seconds < 20, seconds


def test_deadline_stops_within_a_few_steps_then_evaluates(one_device_train_py, tmp_path):
    args = (*SLOW, "--config.max_train_seconds=4", f"--workdir={tmp_path}")
    run = _Output(one_device_train_py, *args)
    run.wait_for("compiled the train step")
    started = time.monotonic()
    code, _, err = run.finish()
    assert code == 0, err[-3000:]
    line = next(x for x in run.text.splitlines() if "stopped at step" in x)
    assert "(max_train_seconds)" in line
    step = int(line.split("stopped at step ")[1].split()[0])
    assert 1 <= step <= 30 and _saved_steps(tmp_path) == [step]
    # The final evaluation ran on the stopped step.
    assert "kNN top-1" in run.text
    assert os.path.exists(tmp_path / f"eval_{step}.json")
    assert time.monotonic() - started < 180
    assert records(tmp_path)[-1]["step"] == step  # the steps since the last log, logged
