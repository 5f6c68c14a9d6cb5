"""Several processes on localhost: 2 processes x 4 (or x 2) CPU devices == 1 process x 8.

Real processes joined by ``jax.distributed`` (gloo collectives on the CPU), one
workdir, one orbax checkpoint written by both. SGD, so that the comparison
measures summation order only (AdamW's first update is lr * sign(g), which turns
the order noise of near-zero gradients into lr-sized differences).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jssl import check, run_info
from jssl.experiment import restore_run
from tests.helpers import ROOT, TrainPy, smoke_args, tiny_flags

SGD = ("--config.optim.name=sgd", "--config.eval.probe_epochs=2")
SIMCLR = smoke_args(
    "simclr",
    *tiny_flags(),
    *SGD,
    "--config.num_steps=60",
    "--config.checkpoint_every=5",
    "--config.log_every=10",
)
DINO = smoke_args("dino", *SGD, "--config.num_steps=4", "--config.augment.num_local_crops=0")
# SeLa relabelled twice in 4 steps; the validation carve leaves 1,208 training images,
# a multiple of 8, so the label table is split over the devices.
SELA = smoke_args(
    "sela",
    *tiny_flags(),
    *SGD,
    "--config.data.val_fraction=0.16",
    "--config.num_steps=4",
    "--config.sela.num_label_updates=2",
)
# BYOL and SwAV with their presets' optimisers (LARS, AdamW), MAE with SGD (see DINO's).
STEPS = ("--config.num_steps=4", "--config.eval.probe_epochs=2")
VIT = ("--config.augment.crop_size=8", "--config.model.kwargs.patch_size=2")
MORE = {
    "byol": smoke_args("byol", *tiny_flags(), *STEPS),
    "swav": smoke_args("swav", *tiny_flags(), *STEPS),
    "mae": smoke_args("mae", *VIT, "--config.model.kwargs.image_size=8", *SGD, *STEPS),
}
# The 1 process x 8 devices references, run in the background from the session's start.
TRAIN_PY_RUNS = {"simclr": SIMCLR, "dino": DINO, "sela": SELA, **MORE}
SLOW_RUNS = ("simclr", "dino", "sela", "swav", "mae")  # read only by tests marked slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner(train_py: TrainPy, devices: int) -> TrainPy:
    flags = re.sub(
        r"--xla_force_host_platform_device_count=\d+",
        f"--xla_force_host_platform_device_count={devices}",
        train_py.env["XLA_FLAGS"],
    )
    return TrainPy({**train_py.env, "XLA_FLAGS": flags})


def _start_processes(train_py, args, *, n=2, devices=4, heartbeat=100):
    """n processes of ``train.py args`` joined on a free local port. ``heartbeat`` is JAX's
    default except where a process is killed: on a loaded 2-core CI machine both processes
    of a healthy DINO run once aborted (SIGABRT) with a 10 s heartbeat timeout."""
    port = _free_port()
    runner = _runner(train_py, devices)
    return [
        runner.start(
            *args,
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={n}",
            f"--process_id={i}",
            f"--heartbeat_timeout={heartbeat}",
        )
        for i in range(n)
    ]


def _finish(procs, timeout=300):
    out = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, out, strict=True):
        assert p.returncode == 0, _reason(err)
    return out


def _reason(err: str) -> str:
    """The end of a process's stderr without faulthandler's list of extension modules
    (which alone fills 3,000 characters after an abort) and its thread stacks."""
    kept = [
        line
        for line in err.split("Extension modules:")[0].splitlines()
        if not line.startswith(("  File ", "Thread 0x", "Current thread 0x"))
    ]
    return "\n".join(kept)[-3000:]


# DINO's float32 step is up to 5e-5 from float64 (tests/test_check.py), so two of its
# layouts, with SGD (no Adam second moment), may differ by the sum (check.layout_limit);
# measured 2026-12-07 after 4 steps: 2 x 2 4.7e-5, 2 x 4 3.1e-5. The other
# methods: 2e-7 (MAE) to 3.2e-6 (BYOL).
LAYOUT_LIMIT = {"dino": check.layout_limit(5e-5)}


def _assert_every_leaf_close(a, b, method):
    """Every leaf of two TrainStates (parameters, optimiser, BatchNorm statistics, method
    state) within jssl.check's relative limits for float32 rounding in another order:
    ``check.EQUAL`` in root mean square (DINO: ``LAYOUT_LIMIT``), ``check.PRECISE`` at
    its largest difference."""
    roots = set(b.params)
    leaf, err = check.worst(check.leaf_errors(a, b, roots=roots, rms=True))
    assert err <= LAYOUT_LIMIT.get(method, check.EQUAL), (leaf, err)
    leaf, err = check.worst(check.leaf_errors(a, b, roots=roots))
    assert err <= check.PRECISE, (leaf, err)


def _metrics_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_killed_and_resumed_equal_one_process(train_py, train_py_runs, tmp_path):
    """SimCLR: a 2 x 4 run, process 1 SIGKILLed mid-run (process 0 exits non-zero within
    the heartbeat timeout), both restarted: every leaf of the state as one 1 x 8 run's."""
    args = SIMCLR

    run = tmp_path / "two"
    procs = _start_processes(train_py, (*args, f"--workdir={run}"), heartbeat=10)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "5").exists():
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    procs[0].communicate(timeout=120)
    waited = time.monotonic() - t0
    procs[1].wait()
    assert procs[0].returncode != 0 and waited < 60, (procs[0].returncode, waited)
    steps = [int(d) for d in os.listdir(run / "checkpoints") if d.isdigit()]
    assert max(steps) < 60, "the kill came after the end of the run"

    outs = _finish(_start_processes(train_py, (*args, f"--workdir={run}")))
    assert "kNN top-1" in outs[0][0] and "kNN top-1" not in outs[1][0]  # process 0 prints
    one = train_py_runs["simclr"]
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = restore_run(str(run)), restore_run(str(one.workdir))
    assert int(a.state.step) == int(b.state.step) == 60
    _assert_every_leaf_close(jax.device_get(a.state), jax.device_get(b.state), "simclr")
    logged = [r["step"] for r in _metrics_lines(run) if r["kind"] == "train"]
    assert logged == sorted(set(logged)) and logged[-1] == 60  # one writer, no repeats
    with open(run / "eval_60.json") as f, open(os.path.join(one.workdir, "eval_60.json")) as g:
        two, single = json.load(f), json.load(g)
    assert two["knn_top1"] == pytest.approx(single["knn_top1"], abs=0.01)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_after_one_step(train_py, tmp_path):
    """Preemption reaches one host first: SIGTERM to process 1 alone. The processes vote each
    step and both stop after the same step, save one checkpoint and exit 0 (a stop decided
    by one process alone left the other blocked in its next collective)."""
    run = tmp_path / "two"
    args = (*SIMCLR, "--config.num_steps=100000", "--config.checkpoint_every=100000")
    procs = _start_processes(train_py, (*args, f"--workdir={run}"), heartbeat=20)
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists() or not _metrics_lines(run):
        assert all(p.poll() is None for p in procs), _reason(procs[0].stderr.read())
        assert time.monotonic() < deadline
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    outs = [p.communicate(timeout=120) for p in procs]
    waited = time.monotonic() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, _reason(err)
    assert waited < 60, waited
    stopped = re.search(r"stopped at step (\d+) \(SIGTERM\)", outs[0][0])
    assert stopped, outs[0][0][-2000:]
    steps = [int(d) for d in os.listdir(run / "checkpoints") if d.isdigit()]
    assert steps == [int(stopped.group(1))]
    assert int(restore_run(str(run)).state.step) == steps[0]


@pytest.mark.slow
def test_features_on_two_processes_equal_one_process(train_py, train_py_runs, tmp_path):
    """python -m jssl.features on 2 processes x 4 devices: the file process 0 writes holds the
    same rows as the one written here (one process, 8 devices)."""
    from jssl import features

    run = train_py_runs["simclr"]
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = str(tmp_path / "one.npz"), str(tmp_path / "two.npz")
    args = [f"--workdir={run.workdir}", "--split=test", "--chunk=100"]
    assert features.main(["jssl.features", *args, f"--out={one}"]) == 0
    port = _free_port()
    runner = _runner(train_py, 4)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jssl.features",
                *args,
                f"--out={two}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env=runner.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    _finish(procs)
    a, b = features.load(one), features.load(two)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(b.features, a.features, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method, devices",
    [
        ("byol", 4),
        *(pytest.param(*p, marks=pytest.mark.slow) for p in (("dino", 2), ("dino", 4))),
        *(pytest.param(m, 4, marks=pytest.mark.slow) for m in ("swav", "mae")),
    ],
)
def test_two_processes_equal_one_process(train_py, train_py_runs, tmp_path, method, devices):
    """DINO (teacher and centre) on 2 processes x 2 and x 4 devices, BYOL (its EMA target),
    SwAV (its prototypes, renormalised after each step) and MAE on 2 x 4: every leaf of
    the state after 4 steps as the 1 x 8 run's."""
    work = tmp_path / "two"
    args = TRAIN_PY_RUNS[method]
    _finish(_start_processes(train_py, (*args, f"--workdir={work}"), devices=devices))
    one = train_py_runs[method]
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = restore_run(str(work)), restore_run(str(one.workdir))
    assert int(a.state.step) == int(b.state.step) == 4
    session = run_info.read(str(work))[-1]
    assert session["process_count"] == 2 and session["devices"].startswith(f"{2 * devices} x ")
    _assert_every_leaf_close(jax.device_get(a.state), jax.device_get(b.state), method)


@pytest.mark.slow
def test_two_processes_equal_one_process_sela_labels_split(train_py, train_py_runs, tmp_path):
    """SeLa with its label table split by example over the devices of both processes,
    each process reading only its rows of the relabelling passes: the 2 x 4 run ends
    with the labels (exactly) and the parameters of the 1 x 8 run."""
    _finish(_start_processes(train_py, (*SELA, f"--workdir={tmp_path / 'two'}")))
    one = train_py_runs["sela"]
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = restore_run(str(tmp_path / "two")), restore_run(str(one.workdir))
    assert len(a.experiment.train) == 1208 and int(a.state.step) == int(b.state.step) == 4
    assert int(a.state.method_state["label_updates"]) == 2
    labels = a.state.method_state["labels"]
    assert labels.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(b.state.method_state["labels"]))
    _assert_every_leaf_close(jax.device_get(a.state), jax.device_get(b.state), "sela")


# Each process: Predictor.sharded of 64 images and SCAN's mining from it, over the
# 8 devices of 2 processes; prints what it got and which rows it holds.
_SHARDED_SCRIPT = """
import json, sys
import numpy as np
from jssl import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), timeout=120)
import jax, flax.linen as nn
from jssl import data, evaluation, sharding
from jssl.methods import scan

class Flatten(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
        out = nn.Dense(3)(x.reshape(x.shape[0], -1))
        return out, {"features": out}

images = np.random.default_rng(0).integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
source = data.Split(images, np.zeros(64, np.int32))
model = Flatten()
variables = jax.device_get(model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)), train=False))
predict = evaluation.Predictor(model, sharding.make_mesh(), crop_size=4, batch_size=16)
features = predict.sharded(variables, source)
shards = features.addressable_shards
print(json.dumps({
    "gathered": predict(variables, source).tolist(),
    "rows": sorted(s.index[0].start for s in shards),
    "local": {str(s.index[0].start): np.asarray(s.data).tolist() for s in shards},
    "neighbors": scan.mine_neighbors(features, k=5, mesh=predict.mesh, chunk_size=24).tolist(),
}))
"""


def test_sharded_predictions_and_mining_across_two_processes(train_py):
    """Predictor.sharded over 2 processes x 4 devices: each process holds its own four row
    blocks, equal to the gathered predictions; SCAN's mining from that split bank gives
    every process the neighbours one process finds on its own."""
    port, env = _free_port(), _runner(train_py, 4).env
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SHARDED_SCRIPT, f"127.0.0.1:{port}", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        for i in range(2)
    ]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in _finish(procs, timeout=240)]
    want = np.asarray(got[0]["gathered"], np.float32)
    assert want.shape == (64, 3)
    x = want / np.linalg.norm(want, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    neighbors = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    for rank, g in enumerate(got):
        np.testing.assert_array_equal(np.asarray(g["gathered"], np.float32), want)
        assert g["rows"] == [32 * rank + 8 * d for d in range(4)]
        for start, rows in g["local"].items():
            s = int(start)
            np.testing.assert_allclose(rows, want[s : s + 8], rtol=1e-6)
        np.testing.assert_array_equal(g["neighbors"], neighbors)


@pytest.mark.parametrize(
    "flags, pattern",
    [
        ((None, 2, None), r"--coordinator_address, --process_id missing"),
        (("localhost", 2, 0), r"is not HOST:PORT"),
        (("127.0.0.1:1", 2, 2), r"--process_id=2 must be in 0\.\.1"),
    ],
)
def test_bad_process_flags(flags, pattern):
    from jssl.distributed import DistributedError, initialize

    with pytest.raises(DistributedError, match=pattern):
        initialize(*flags, timeout=1)


def test_unreachable_coordinator_is_one_error_line(train_py, tmp_path):
    """Process 1 of 2, and no process 0 anywhere: JAX itself would abort the process."""
    args = (*smoke_args("simclr", *tiny_flags()), f"--workdir={tmp_path / 'w'}")
    flags = [f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2"]
    proc = train_py(*args, *flags, "--process_id=1", "--distributed_timeout=3", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    pattern = r"process 1 of 2 could not join the coordinator at 127\.0\.0\.1:\d+ within 3 s"
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
