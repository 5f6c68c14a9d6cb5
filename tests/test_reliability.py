"""Kills, preemption and device-count changes never lose or alter work."""

import dataclasses
import json
import logging
import os
import re
import signal
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import checkpoint, metrics_log, trainer
from tests.helpers import (
    TrainPy,
    leaves_equal,
    records,
    smoke_args,
    tiny_config,
    tiny_flags,
)


def restore_final(config, workdir):
    exp = trainer.Experiment(config, jax.devices()[:1])
    ckpt = checkpoint.Checkpointer(str(workdir))
    try:
        return ckpt.restore(exp.init_state())
    finally:
        ckpt.close()


def test_checkpoint_from_8_devices_resumes_on_1(tmp_path):
    config = tiny_config("simclr")
    saved = trainer.train_and_evaluate(
        config, str(tmp_path / "b"), devices=jax.devices(), show_progress=False, stop_at_step=2
    )["state"]
    assert len(saved.params["head"]["Dense_0"]["kernel"].sharding.device_set) == 8
    # The restore itself is exact on another device count...
    restored = restore_final(config, tmp_path / "b")
    assert restored.params["head"]["Dense_0"]["kernel"].sharding.device_set == {jax.devices()[0]}
    leaves_equal(jax.device_get(saved), jax.device_get(restored))
    # ...and the run continues on 1 device like a run that never changed devices
    # (up to float summation order: 8 devices reduce in another order).
    straight = trainer.train_and_evaluate(
        config, str(tmp_path / "a"), devices=jax.devices()[:1], show_progress=False
    )
    resumed = trainer.train_and_evaluate(
        config, str(tmp_path / "b"), devices=jax.devices()[:1], show_progress=False
    )
    assert int(resumed["state"].step) == 4
    np.testing.assert_allclose(resumed["eval"]["knn_top1"], straight["eval"]["knn_top1"], atol=0.02)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-2),
        straight["state"].params,
        resumed["state"].params,
    )


def test_a_save_in_one_process_compiles_nothing_and_restores_exactly(tmp_path, caplog):
    """The state replicated on 8 devices is written whole from one replica: no slicing
    program per array and replica (orbax's replica-parallel saving compiled 28 here). The
    handler swap that does it logs no warning of its own."""
    import orbax.checkpoint as ocp

    exp = trainer.Experiment(tiny_config("simclr"), jax.devices())
    state = exp.init_state()
    # orbax's default handler back, so that the Checkpointer below replaces it again
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=True), override=True
    )
    caplog.clear()
    compiled = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        ckpt = checkpoint.Checkpointer(str(tmp_path))
        try:
            ckpt.save(state)
            ckpt.wait()
        finally:
            ckpt.close()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    assert not ocp.type_handlers.get_type_handler(jax.Array)._use_replica_parallel
    assert [r.getMessage() for r in caplog.records if "Type handler" in r.getMessage()] == []
    # the filter is gone again: other overrides still warn
    assert not any(
        isinstance(f, checkpoint._NoOverrideWarning) for f in logging.getLogger("absl").filters
    )
    leaves_equal(jax.device_get(state), jax.device_get(restore_final(exp.config, tmp_path)))


# The tiny config, 12 steps long with a checkpoint every 3: the subprocess tests pay for
# JAX start-up and compilation.
LONGER = {"num_steps": 12, "checkpoint_every": 3}
TINY_ARGS = smoke_args("simclr", *tiny_flags(**LONGER))
# The uninterrupted run the kill-and-resume test compares with.
TRAIN_PY_RUNS = {"straight": TINY_ARGS}
TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _listing(workdir):
    """(complete steps, leftover orbax temporary folders) under workdir/checkpoints."""
    try:
        names = os.listdir(os.path.join(workdir, "checkpoints"))
    except FileNotFoundError:
        return [], []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if TMP_SUFFIX in n]


def _stop_process(pid):
    """SIGSTOP, then wait until the kernel reports the process stopped ('T')."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(2000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    raise TimeoutError("process did not stop")


def _kill_during_save(proc, workdir, after_step, timeout=240):
    """SIGKILLs ``proc`` while an async save of a step > ``after_step`` is half written.

    Polls for orbax's temporary folder, freezes the process with SIGSTOP, and
    kills it only if the folder is still there (the save not yet renamed into
    place); otherwise lets it continue until the next save. Returns the name
    of the half-written folder.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        _, tmp = _listing(workdir)
        tmp = [t for t in tmp if int(t.split(".")[0]) > after_step]
        if tmp:
            _stop_process(proc.pid)
            if set(tmp) & set(_listing(workdir)[1]):
                proc.kill()
                proc.communicate(timeout=60)
                return tmp[0]
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"no save was caught in flight (exit code {proc.poll()})")


def _start_step(stdout):
    """The step a run started from: tqdm's first render of the bar, e.g. ' 3/12 ['."""
    return int(re.search(r"(\d+)/\d+ \[", stdout).group(1))


def _no_pickle(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            assert not name.endswith((".pkl", ".pickle")), name
            with open(os.path.join(dirpath, name), "rb") as f:
                head = f.read(2)
            # Pickle protocols 2-5 start with PROTO (0x80) and the protocol number.
            assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), name


def _tensorboard_steps(workdir) -> dict[str, list[int]]:
    """Tag -> steps as TensorBoard shows them: the event files (TFRecords of Event protos)
    read in the order they were written, a SessionLog START at step T (tensorboardX's
    purge_step) dropping the earlier files' events of steps >= T."""
    from tensorboardX.proto import event_pb2

    folder = os.path.join(workdir, "tensorboard")
    paths = sorted(
        (os.path.join(folder, f) for f in os.listdir(folder)), key=lambda p: os.stat(p).st_mtime_ns
    )
    steps: dict[str, list[int]] = {}
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        i = 0
        while i + 12 <= len(raw):
            (n,) = struct.unpack("<Q", raw[i : i + 8])
            if i + 16 + n > len(raw):
                break  # a record cut short by the kill
            event = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
            i += 16 + n
            if event.session_log.status == event_pb2.SessionLog.START:
                steps = {tag: [s for s in v if s < event.step] for tag, v in steps.items()}
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_resumed_writer_purges_the_steps_logged_after_the_checkpoint(tmp_path):
    """Steps 1-5 logged, the run killed, resumed from checkpoint 3: steps 4 and 5 are
    logged again. With ``resume(3)`` metrics.jsonl and TensorBoard hold each step once;
    without it TensorBoard would show 4 and 5 twice."""
    for resume, want in ((True, [1, 2, 3, 4, 5, 6]), (False, [1, 2, 3, 4, 5, 4, 5, 6])):
        workdir = tmp_path / str(resume)
        workdir.mkdir()
        first = metrics_log.MetricWriter(str(workdir))
        for step in range(1, 6):
            first.write(step, {"loss": 1.0 / step})
        first.close()
        time.sleep(0.01)  # the second file's mtime is later (same second, same process)
        second = metrics_log.MetricWriter(str(workdir))
        if resume:
            second.resume(3)
        for step in range(4, 7):
            second.write(step, {"loss": 1.0 / step})
        second.close()
        assert _tensorboard_steps(workdir)["train/loss"] == want
        if resume:
            assert [r["step"] for r in records(workdir)] == want


def test_kill_during_async_save_and_sigterm_resume_bit_exact(train_py_runs, train_py, tmp_path):
    """kill -9 in the middle of an async checkpoint save, SIGTERM, restart: same result.

    The half-written save stays a temporary folder, is never taken for a step,
    is removed on restart, and the run resumes from the last complete step.
    """
    interrupted = tmp_path / "interrupted"
    args = (*TINY_ARGS, f"--workdir={interrupted}")
    proc = train_py.start(*args, text=False)
    half_written = _kill_during_save(proc, interrupted, after_step=3)
    complete, leftovers = _listing(interrupted)
    assert half_written in leftovers  # killed mid-save: the step folder was never completed
    assert int(half_written.split(".")[0]) not in complete
    last_complete = max(complete)

    # SIGTERM once the restarted run has written a new checkpoint: it saves, waits, exits 0.
    proc = train_py.start(*args)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(s > last_complete for s in _listing(interrupted)[0]):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert _start_step(out) == last_complete  # resumed from the last complete checkpoint
    complete, leftovers = _listing(interrupted)
    assert leftovers == [] and max(complete) > last_complete  # cleaned, and the save finished

    final = train_py(*args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _start_step(final.stdout) == max(complete)

    straight = train_py_runs["straight"]
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Exit waited for the final async save: complete, nothing left half written.
    assert _listing(straight.workdir) == ([6, 9, 12], [])
    config = tiny_config("simclr", **LONGER)
    a, b = restore_final(config, straight.workdir), restore_final(config, interrupted)
    assert int(a.step) == int(b.step) == 12
    leaves_equal(
        (a.params, a.opt_state, a.batch_stats, a.rng), (b.params, b.opt_state, b.batch_stats, b.rng)
    )
    # Each step once in metrics.jsonl, and in TensorBoard's view of the event files.
    logged = [r["step"] for r in records(interrupted)]
    assert logged == sorted(set(logged)) and logged[-1] == 12
    assert _tensorboard_steps(interrupted)["train/loss"] == logged
    # No pickle anywhere in the run folder (orbax arrays, JSON); the saved config is JSON.
    _no_pickle(interrupted)
    assert json.load(open(interrupted / "config.json"))["num_steps"] == 12


# Runs argv[1:] where files larger than 32 KiB cannot be written (EFBIG, as on a full
# quota): the checkpoint's array data fails in orbax's background thread, small files
# (config.json, metrics) still work. (A wrapper instead of preexec_fn: no Python code runs
# between fork and exec in a process with JAX's threads.)
_LIMIT_FILE_SIZE = (
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, resource.RLIM_INFINITY)); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_failed_background_save_fails_the_run(train_py, tmp_path):
    workdir = tmp_path / "run"
    # The program of the other 12-step runs, read from the session's compilation cache; no
    # write to it (min compile time 1e9 s): under the file size limit a write would leave
    # a truncated entry that later runs of the program fail to read.
    reads_cache = TrainPy({**train_py.env, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1e9"})
    proc = reads_cache(
        *TINY_ARGS, f"--workdir={workdir}", wrapper=(sys.executable, "-c", _LIMIT_FILE_SIZE)
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    # (orbax also logs the failure with tracebacks from its background threads, which can
    # write into the middle of the error line: "RuntimeErrorerror: Saving ...".)
    lines = proc.stderr.splitlines()
    errors = [line[line.index("error: ") :] for line in lines if "error: " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "checkpoint" in errors[0] and "File too large" in errors[0], errors[0]
    # the step whose save failed (the first, at checkpoint_every=3), not the next one
    assert "Saving the checkpoint of step 3 " in errors[0], errors[0]
    assert "the latest complete checkpoint is none yet" in errors[0], errors[0]
    # orbax's own logged errors (a traceback per background thread) are not shown, nor
    # tensorstore's "Event loop is closed" (they come in some runs only)
    assert not [line for line in lines if re.match(r"E\d{4} ", line)], proc.stderr[:3000]
    assert "Traceback" not in proc.stderr, proc.stderr[:3000]
    # The failed save is not a checkpoint, and nothing was evaluated.
    assert _listing(workdir)[0] == []
    assert not list(workdir.glob("eval_*.json"))


def test_full_disk_under_the_metrics_is_one_error_naming_the_latest_checkpoint(
    monkeypatch, tmp_path
):
    # metrics.jsonl and the TensorBoard events are appended to /dev/full (every write fails
    # with ENOSPC); checkpoints are written normally, every 2 steps.
    import builtins

    def full_appends(path, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if "a" in mode else path, mode, *args, **kwargs)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    (tmp_path / "alone").mkdir()
    monkeypatch.setattr(metrics_log, "open", full_appends, raising=False)
    writer = metrics_log.MetricWriter(str(tmp_path / "alone"))
    with pytest.raises(metrics_log.MetricsWriteError, match="train metrics of step 7 .* No space"):
        writer.write(7, {"loss": 1.0})
    writer.close()  # quietly: its buffers cannot be written

    config = tiny_config("simclr", num_steps=6, checkpoint_every=2, log_every=3)
    message = (
        r"^Writing the train metrics of step 3 in \S+ failed \(.*No space left on device.*\); "
        r"the latest complete checkpoint is 2\. Check free disk space"
    )
    with pytest.raises(checkpoint.CheckpointError, match=message):
        trainer.train_and_evaluate(
            config, str(tmp_path / "run"), devices=jax.devices()[:1], show_progress=False
        )
    assert _listing(tmp_path / "run") == ([2], [])


def test_closed_event_loop_reports_are_hidden_and_other_unraisable_errors_shown(monkeypatch):
    # tensorstore's writes still pending after a failed save report "Event loop is closed"
    # through sys.unraisablehook (a traceback each, dozens after a full disk); an object
    # whose __del__ raises reaches the same hook.
    shown = []
    monkeypatch.setattr(sys, "unraisablehook", shown.append)
    checkpoint.hide_background_errors()

    class Raises:
        def __init__(self, message):
            self.message = message

        def __del__(self):
            raise RuntimeError(self.message)

    Raises("Event loop is closed")
    Raises("something else")
    assert [str(u.exc_value) for u in shown] == ["something else"]
    checkpoint.hide_background_errors()  # a second call wraps the hook once, not twice
    Raises("something else")
    assert len(shown) == 2


def _poisoned_simclr(loss_nan_at, grad_nan_at):
    """SimCLR whose loss is NaN at update ``loss_nan_at`` and whose gradients (only) are NaN
    at update ``grad_nan_at`` (0-based ``state.step``)."""
    from jssl.methods import METHODS

    @jax.custom_vjp
    def poison_grad(x, bad):
        return x

    def fwd(x, bad):
        return x, bad

    def bwd(bad, g):
        return jnp.where(bad, jnp.nan, g), None

    poison_grad.defvjp(fwd, bwd)
    simclr = METHODS["simclr"]

    def make_loss(model, config, run):
        loss_fn = simclr.make_loss(model, config, run)

        def poisoned(params, batch_stats, views, method_state, step, key):
            loss, aux = loss_fn(params, batch_stats, views, method_state, step, key)
            loss = jnp.where(step == loss_nan_at, jnp.nan, loss)
            return poison_grad(loss, step == grad_nan_at), aux

        return poisoned

    return dataclasses.replace(simclr, make_loss=make_loss)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch, caplog):
    """Update 3 has a NaN loss, update 5 NaN gradients; max_nonfinite_steps=1.

    Update 3 is skipped (not applied, logged) and training goes on; update 5
    exceeds the budget: the run stops naming step 5 and the metric, and the
    checkpoint of step 4 stays the latest, complete.
    """
    from jssl.methods import METHODS

    monkeypatch.setitem(METHODS, "simclr", _poisoned_simclr(loss_nan_at=2, grad_nan_at=4))
    config = tiny_config(
        "simclr",
        num_steps=8,
        checkpoint_every=1,
        log_every=4,
        keep_checkpoints=10,
        max_nonfinite_steps=1,
    )
    devices = jax.devices()[:1]
    with caplog.at_level(logging.WARNING):
        with pytest.raises(trainer.NonFiniteError, match=r"Non-finite grad_norm at step 5 \(2 "):
            trainer.train_and_evaluate(config, str(tmp_path), devices=devices, show_progress=False)
    assert "step 3: non-finite loss, update skipped (1 of at most 1)" in caplog.text
    assert _listing(tmp_path) == ([1, 2, 3, 4], [])  # waited for the saves; no step 5

    template = trainer.Experiment(config, devices).init_state()
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    try:
        s2, s3, s4 = (jax.device_get(ckpt.restore(template, step=s)) for s in (2, 3, 4))
    finally:
        ckpt.close()
    assert [int(s.nonfinite_steps) for s in (s2, s3, s4)] == [0, 1, 1]
    leaves_equal((s2.params, s2.opt_state), (s3.params, s3.opt_state))  # step 3 not applied
    assert not np.array_equal(
        s3.params["head"]["Dense_0"]["kernel"], s4.params["head"]["Dense_0"]["kernel"]
    )
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(s4.params))


def _tiny_image_folder(root, n_train, n_test, extra_file=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            cls = "ab"[i % 2]
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    if extra_file:
        (root / "train" / "a" / extra_file).write_text("not an image")
    return root


def test_bad_input_gives_one_line_errors_through_train_py(train_py, tmp_path):
    """Each case exits 1 with one `error:` line naming the problem, and no traceback.

    The subprocesses see the 8 fake devices of conftest.py and run concurrently
    (they fail before anything is compiled).
    """
    raising = tmp_path / "raising_config.py"
    raising.write_text("def get_config(arg=None):\n    raise RuntimeError('broken config')\n")
    four = _tiny_image_folder(tmp_path / "four", n_train=4, n_test=2)
    with_text = _tiny_image_folder(tmp_path / "text", n_train=8, n_test=2, extra_file="notes.txt")
    empty_class = _tiny_image_folder(tmp_path / "empty", n_train=8, n_test=2)
    (empty_class / "train" / "c").mkdir()
    folder = ["--config.data.name=image_folder", f"--config.data.cache_dir={tmp_path / 'cache'}"]
    cases = {
        "unknown dataset": (
            ["--config.data.name=cifar100"],
            "unknown dataset source 'cifar100'; known sources: "
            "['arrayrecord', 'digits', 'image_folder', 'tfds']",
        ),
        "tfds name with a path": (
            ["--config.data.name=tfds", "--config.data.tfds_name=../../x"],
            "invalid tfds dataset name '../../x'",
        ),
        "config file missing": (["--config=configs/no_such_method.py"], "No such file"),
        "config argument raises": (
            ["--config=configs/simclr.py:no_such_preset"],
            "raised ValueError: Bad config argument 'no_such_preset'",
        ),
        "config code raises": ([f"--config={raising}"], "raised RuntimeError: broken config"),
        "unknown override": (["--config.no_such_field=1"], "no_such_field"),
        "batch not divisible by devices": (
            ["--config.batch_size=12"],
            "batch_size=12 is not divisible by the 8 devices",
        ),
        "more devices than examples": (
            [*folder, f"--config.data.path={four}", "--config.batch_size=8"],
            "batch_size=8 is larger than the 4 training examples",
        ),
        "non-image file": (
            [*folder, f"--config.data.path={with_text}", "--config.batch_size=8"],
            "notes.txt",
        ),
        "empty class folder": (
            [*folder, f"--config.data.path={empty_class}", "--config.batch_size=8"],
            f"the class folder {empty_class / 'train' / 'c'} has no images",
        ),
        "missing image folder": (
            [
                "--config=configs/simclr.py:cifar10_folder,smoke",
                f"--config.data.path={tmp_path / 'nowhere'}",
            ],
            str(tmp_path / "nowhere"),
        ),
    }
    procs = {}
    for i, (name, (args, _)) in enumerate(cases.items()):
        workdir = tmp_path / f"run{i}"
        if not any(a.startswith("--config=") for a in args):
            args = ["--config=configs/simclr.py:digits,smoke", *args]
        procs[name] = train_py.start(f"--workdir={workdir}", *args)
    for i, (name, proc) in enumerate(procs.items()):
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 1, (name, err[-2000:])
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in err, (name, err[-2000:])
        assert cases[name][1] in errors[0], (name, errors[0])
        assert not (tmp_path / f"run{i}" / "checkpoints").exists(), name


def test_evaluation_with_more_devices_than_test_examples(tmp_path):
    """3 test images on 8 devices: the evaluation pads its batches instead of failing."""
    root = _tiny_image_folder(tmp_path / "imgs", n_train=8, n_test=3)
    config = tiny_config(
        "simclr",
        **{"data.name": "image_folder", "data.path": str(root), "batch_size": 8},
        **{"data.cache_dir": str(tmp_path / "cache"), "eval.knn_k": 4},
    )
    exp = trainer.Experiment(config, jax.devices())
    assert exp.mesh.devices.size == 8 and len(exp.dataset.test) == 3
    results = exp.evaluate(exp.init_state())
    assert all(np.isfinite(results[k].value) for k in ("knn_top1", "linear_top1", "cluster_acc"))
