"""train_and_evaluate(config, workdir): stages, init, loop, logging, checkpoints, evaluation.

A run whose ``config.init_from.workdir`` is ``"stage:NAME"`` starts from the
weights of the earlier stage ``config.stages.NAME``: that stage is trained first
(or resumed; a finished one is reused) as an ordinary run in ``<workdir>/NAME``,
and its own stages the same way in its folder. SCAN is pretext -> SCAN ->
self-labelling this way.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jssl import distributed, evaluation, optim, progress, run_info, validation
from jssl.checkpoint import Checkpointer, save_config
from jssl.errors import UserError
from jssl.experiment import (
    Experiment,
    RestoredRun,
    load_data,
    restore_run,
    run_finished,
    same_data,
    saved_config,
)
from jssl.metrics_log import MetricsWriteError, MetricWriter
from jssl.resume import ConfigMismatchError, check_resumable

__all__ = [
    "ConfigMismatchError",
    "Experiment",
    "NonFiniteError",
    "RestoredRun",
    "evaluate_checkpoint",
    "evaluate_weights",
    "open_run",
    "restore_run",
    "summary_table",
    "train_and_evaluate",
]

STAGE_PREFIX = "stage:"
SLOW_RUN_HOURS = 12.0  # a CPU run projected longer than this gets a warning with the fix
SLOW_CHECK_STEP = 3  # the finished step after which a slow CPU run is named (1: compiles)
LABELS_FILE = "metric_labels.json"  # [metric, label] rows of the summary table, in order


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""


# ----------------------------------------------------------------------------- logging


def summary_table(
    trained: dict[str, evaluation.Metric], untrained: dict[str, float] | None, step: int
) -> str:
    """The trained network's labelled metrics beside the untrained network's, and the change
    (without those two columns when the untrained network was not evaluated).

    Only metrics with a label are rows (an index or a count stays in the JSON).
    """
    if not untrained:
        header = f"{'metric':<26} {'step ' + str(step):>12}"
        rows = [f"{m.label:<26} {m.value:>12.4f}" for m in trained.values() if m.label]
    else:
        header = f"{'metric':<26} {'untrained':>10} {'step ' + str(step):>12} {'change':>8}"
        rows = []
        for key, metric in trained.items():
            if metric.label is None:
                continue
            t, u = metric.value, untrained.get(key, float("nan"))
            rows.append(f"{metric.label:<26} {u:>10.4f} {t:>12.4f} {t - u:>+8.4f}")
    rule = "-" * len(header)
    return "\n".join([rule, header, rule, *rows, rule])


def subset_note(fitted: int, total: int, config: ml_collections.ConfigDict) -> str:
    """The line under the summary table when the evaluators fit on a subset (the protocol)."""
    if config.eval.max_train_examples:
        why, fix = "eval.max_train_examples", "--config.eval.max_train_examples=0"
    else:
        why, fix = (
            "the CPU cap eval.cpu_max_train_examples",
            "--config.eval.cpu_max_train_examples=0",
        )
    return (
        f"(kNN and linear probe fitted on {fitted:,} of the {total:,} training images, "
        f"drawn from the seed: {why}; {fix} fits on all of them)"
    )


def _values(results: dict[str, evaluation.Metric]) -> dict[str, float]:
    return {k: m.value for k, m in results.items()}


def _write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` atomically; process 0 only (every process computes the same ``obj``)."""
    if not distributed.is_primary():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _warn(bar, step: int, warnings: list[str]) -> None:
    """Collapse warnings to the log and above the progress bar."""
    for warning in warnings:
        logging.warning("step %d: %s", step, warning)
        bar.write(f"warning: step {step}: {warning}")


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history))
    return {k: float(np.mean(v)) for k, v in stacked.items()}


class _Stop:
    """SIGTERM (preemption) and the first Ctrl-C (SIGINT) set ``reason``, so that the loop
    saves at the next step boundary and ends cleanly; a second Ctrl-C aborts at once
    (KeyboardInterrupt). The previous handlers come back on exit."""

    REASONS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}
    # Several processes vote with these codes; the largest wins, so that every process
    # stops after the same step for the same reason (and so evaluates, or not, alike).
    CODES = (None, "max_train_seconds", "SIGTERM", "Ctrl-C")

    def __init__(self):
        self.reason: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        for signum in self.REASONS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.reason == "Ctrl-C":
            raise KeyboardInterrupt
        self.reason = self.reason or self.REASONS[signum]

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# ----------------------------------------------------------------------------- entry points


def _resolve_init_from(
    config: ml_collections.ConfigDict, workdir: str, *, devices, dataset, train_stages: bool
) -> RestoredRun | None:
    """The restored ``config.init_from`` run (None without one), training a stage it names.

    ``"stage:NAME"`` is the earlier stage ``config.stages.NAME`` in ``workdir/NAME``:
    trained (or resumed) first when ``train_stages``, unless it already finished.
    """
    ref = config.init_from.workdir
    if not ref:
        return None
    if ref.startswith(STAGE_PREFIX):
        name = ref[len(STAGE_PREFIX) :]
        stages = config.get("stages") or {}
        if name not in stages:
            raise UserError(
                f"config.init_from.workdir={ref!r} names no stage of this config (stages: "
                f"{sorted(stages) or 'none'}); give a run folder instead."
            )
        path = os.path.join(workdir, name)
        if not run_finished(path):
            if not train_stages:
                raise UserError(f"The {name} stage in {path} has not finished; train it first.")
            logging.warning("Running the %s stage in %s first", name, path)
            print(f"{name} stage: {path}", flush=True)
            train_and_evaluate(stages[name], path, devices=devices)
        ref = path
    ref = os.path.abspath(ref)
    try:
        source_config = saved_config(ref)
    except UserError as e:
        raise UserError(f"config.init_from.workdir: {e}") from None
    reuse = dataset if same_data(source_config, config) else None
    return restore_run(ref, devices=devices, dataset=reuse)


def _open_workdir(config, workdir: str, *, devices, mode: str = "train", create: bool = True):
    """The entry points' prelude: every config and workdir problem at once
    (``jssl.validation``), the folder (``create``), and the saved run's config against
    this one (``jssl.resume``); returns the absolute workdir."""
    workdir = os.path.abspath(workdir)
    validation.validate(config, workdir, mode=mode, devices=devices)
    if create:
        os.makedirs(workdir, exist_ok=True)
    check_resumable(config, workdir, mode)
    return workdir


def open_run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices=None,
    train_stages: bool = True,
    phase: progress.Phase = progress.silent,
) -> tuple[Experiment, RestoredRun | None]:
    """The Experiment of ``config`` in ``workdir`` with its init_from run and host object
    (whose long phases ``phase`` shows).

    The data is checked against the config (``validation.check_data``) as soon as it is loaded.
    """
    dataset = load_data(config, phase)
    validation.check_data(config, dataset)
    exp = Experiment(config, devices, dataset=dataset, workdir=workdir)
    mesh_devices = list(exp.mesh.devices.flat)
    init_run = _resolve_init_from(
        config, workdir, devices=mesh_devices, dataset=exp.dataset, train_stages=train_stages
    )
    exp.prepare_host(init_run, phase)
    return exp, init_run


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices=None,
    show_progress: bool = True,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    Earlier stages named by ``config.init_from`` run first, each in its own
    subfolder. ``stop_at_step`` interrupts the run after that many updates,
    saving a checkpoint as a preemption would (the schedules still span the
    full run).

    Returns {"state", "eval", "untrained_eval", "stopped"}; "eval" (metric name -> value)
    is None for an interrupted run; "stopped" says why a run ended before its last step
    ("SIGTERM", "Ctrl-C", "max_train_seconds", "stop_at_step") or is None. A run that
    ``config.max_train_seconds`` stopped is evaluated unless ``config.eval.at_deadline``
    is False.

    The config and workdir are checked first (``jssl.validation``): every problem is
    raised together, as one ConfigError, before any data or device work.
    """
    workdir = _open_workdir(config, workdir, devices=devices)
    phase = progress.shown if show_progress else progress.silent
    exp, init_run = open_run(config, workdir, devices=devices, phase=phase)
    save_config(config, workdir)
    ckpt = Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        save_every=config.checkpoint_every,
        async_save=config.async_checkpoints,
    )
    writer = MetricWriter(workdir)
    try:
        state = ckpt.restore_or_init(exp.init_state(init_run), renamed=exp.renamed)
        del init_run  # its arrays are not needed any more
        start = int(jax.device_get(state.step))
        writer.resume(start)  # steps logged after the checkpoint run again
        untrained_path = os.path.join(workdir, "eval_untrained.json")
        # Process 0's view of the file decides for all: every process must evaluate or none.
        if distributed.agree(
            start == 0 and config.eval.untrained and not os.path.exists(untrained_path)
        ):
            logging.info("Evaluating the untrained network")
            evaluated = _evaluate(exp, state, "evaluating the untrained network", show_progress)
            _write_json(untrained_path, _values(evaluated))
        untrained = _read_json(untrained_path)
        logging.info(
            "Training %s on %s: %d steps (%d per epoch), batch %d, %d devices, from step %d",
            config.method,
            exp.dataset.name,
            exp.total_steps,
            exp.steps_per_epoch,
            config.batch_size,
            exp.mesh.devices.size,
            start,
        )
        warning = optim.warmup_warning(config, exp.total_steps, exp.steps_per_epoch)
        if warning and distributed.is_primary():
            print(f"warning: {warning}", flush=True)
        session = run_info.Session(workdir, list(exp.mesh.devices.flat), start)
        state, reason = _train_loop(exp, state, start, ckpt, writer, show_progress, stop_at_step)
        step = int(jax.device_get(state.step))
        session.end(step)
        deadline_eval = reason == "max_train_seconds" and config.eval.get("at_deadline", True)
        if step < exp.total_steps and not deadline_eval:  # interrupted: saved, not evaluated
            return {"state": state, "eval": None, "untrained_eval": untrained, "stopped": reason}
        results = _evaluate_and_report(exp, state, workdir, writer, untrained, show_progress)
        return {"state": state, "eval": results, "untrained_eval": untrained, "stopped": reason}
    except MetricsWriteError as e:  # a full disk: name the checkpoint a rerun resumes from
        ckpt.wait()  # (a pending save that failed as well is the error to report)
        raise ckpt.failed(e.what, e.reason) from e
    finally:
        writer.close()
        ckpt.close()


def past_deadline(now: float, deadline: float, queued: int, step_seconds: float) -> bool:
    """Whether the ``queued`` unfinished steps (the one just dispatched included), at
    ``step_seconds`` each, would end after ``deadline``: the run stops after the step just
    dispatched, so it ends at most one step after the deadline however long the queue."""
    return now + queued * step_seconds > deadline


def slow_run_warning(seconds_per_step: float, steps_left: int, backend: str) -> str | None:
    """A sentence when a run on the CPU would take more than ``SLOW_RUN_HOURS``."""
    hours = seconds_per_step * steps_left / 3600
    if backend != "cpu" or hours <= SLOW_RUN_HOURS:
        return None
    left = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"
    return (
        f"a step takes {seconds_per_step:.1f} s on this CPU, so the {steps_left:,} steps left "
        f"would take {left}: for a CPU-sized run add ',cpu' to a CIFAR-10 config argument "
        "(e.g. configs/simclr.py:cifar10_folder,cpu), or shorten this one with "
        "--config.num_steps or --config.max_train_seconds"
    )


def _train_loop(exp: Experiment, state, start, ckpt, writer, show_progress, stop_at_step=None):
    """Trains from step ``start``; returns (state, why it stopped early or None).

    At most ``config.steps_in_flight`` dispatched steps are unfinished at any time: the
    loop waits for step s - k before it goes on after dispatching step s, so the progress
    bar, images/s, the deadline and the signals act on finished work, at most k steps
    behind the device (unbounded dispatch queues whole epochs of slow CPU steps).

    With several processes a signal or the deadline reaches one process first: each step
    every process votes (``distributed.max_over_processes``, dispatched with the step),
    and all of them stop after the step whose votes they read, the one k steps back.
    """
    from tqdm import tqdm

    config = exp.config
    host = exp.host
    eval_every = config.eval.get("every_steps", 0)  # evaluation during training; 0: none
    in_flight = config.get("steps_in_flight", 2)
    history: list[dict[str, jax.Array]] = []
    primary = distributed.is_primary()
    bar = tqdm(
        total=exp.total_steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not show_progress or not primary,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    t0, steps_in_interval = time.perf_counter(), 0
    deadline = time.monotonic() + config.max_train_seconds if config.max_train_seconds else math.inf
    # Steps since the last non-finite check: checked before every log and every save, so
    # a checkpoint never follows an unchecked bad step.
    unchecked: list[tuple[int, dict[str, jax.Array]]] = []
    pending: collections.deque = collections.deque()  # metrics of unfinished steps
    finished_steps = 0  # of this session
    # When the last finished step ended (at first: when the compiled step was dispatched),
    # and the interval before it: the step time the deadline counts queued steps with.
    finished_at, step_seconds = 0.0, 0.0
    skipped = int(jax.device_get(state.nonfinite_steps))
    reason, stop = None, False
    vote = jax.process_count() > 1
    agreed = 0  # the largest stop code the processes voted for, on a finished step
    with _Stop() as signals:
        for step, batch in zip(range(start, exp.total_steps), exp.batches(start), strict=False):
            first = step == start
            dispatched = time.perf_counter()
            state, metrics = exp.train_step(state, batch)
            if first:  # the first call traces and compiles; then the first step runs
                finished_at = time.perf_counter()
                if primary and show_progress:
                    bar.write(f"compiled the train step in {finished_at - dispatched:.1f} s")
            state = host.update(state, step + 1)
            history.append(metrics)
            late = past_deadline(time.monotonic(), deadline, len(pending) + 1, step_seconds)
            local = signals.reason or ("max_train_seconds" if late else None)
            ballot = None
            if vote:
                ballot = distributed.max_over_processes(exp.mesh, _Stop.CODES.index(local))
                if not in_flight:  # unbounded dispatch: wait for this step's votes
                    agreed = max(agreed, int(ballot))
            pending.append((metrics, ballot))
            while in_flight and len(pending) > in_flight:
                finished, votes = pending.popleft()
                jax.block_until_ready(finished)
                agreed = max(agreed, int(votes)) if votes is not None else agreed
                bar.update(1)
                now = time.perf_counter()
                step_seconds, finished_at = now - finished_at, now
                finished_steps += 1
                if finished_steps == SLOW_CHECK_STEP and primary:
                    left = exp.total_steps - start - finished_steps
                    slow = slow_run_warning(step_seconds, left, jax.default_backend())
                    if slow:
                        bar.write(f"warning: {slow}")
            steps_in_interval += 1
            done = step + 1
            unchecked.append((done, metrics))
            reason = reason or (_Stop.CODES[agreed] if vote else local)
            reason = reason or ("stop_at_step" if done == stop_at_step else None)
            stop = reason is not None and done < exp.total_steps
            log_due = done % config.log_every == 0 or done == exp.total_steps or stop
            save_due = done % config.checkpoint_every == 0 or done == exp.total_steps or stop
            if log_due or save_due:
                skipped = _check_finite(state, unchecked, skipped, config)
                unchecked = []
            if log_due:
                logged = _mean_metrics(history)
                elapsed = time.perf_counter() - t0
                logged["images_per_sec"] = steps_in_interval * config.batch_size / elapsed
                history, t0, steps_in_interval = [], time.perf_counter(), 0
                if exp.method.collapse_warnings is not None:
                    _warn(bar, done, exp.method.collapse_warnings(logged, config))
                writer.write(done, logged)
                bar.set_postfix(
                    loss=f"{logged['loss']:.4f}", img_s=f"{logged['images_per_sec']:.0f}"
                )
            if eval_every and done % eval_every == 0:  # reads the state only
                during = exp.evaluate_during(state)
                writer.write(done, during, kind=evaluation.during.KIND)
                _warn(bar, done, exp.during_warnings(during))
            if save_due:
                ckpt.save(state)
            if stop:
                ckpt.wait()
                if primary:
                    bar.write(
                        f"stopped at step {done} ({reason}): checkpoint saved in "
                        f"{ckpt.directory}; rerun the same command to resume"
                    )
                break
        jax.block_until_ready(list(pending))
        bar.update(len(pending))
    bar.close()
    return state, reason if stop else None


def _check_finite(state, unchecked, skipped: int, config) -> int:
    """Stops the run if the non-finite steps among ``unchecked`` exceed the budget.

    ``unchecked``: (step number, metrics) of the steps since the last check;
    ``skipped``: non-finite steps counted before them. Returns the new count.
    The train step never applies a non-finite update; this only decides whether
    to go on (logging each skipped step) or to stop naming the step.
    """
    total = int(jax.device_get(state.nonfinite_steps))
    if total == skipped:
        return total
    for done, metrics in jax.device_get(unchecked):
        if float(metrics["finite"]) != 0.0:
            continue
        skipped += 1
        order = ["loss", "grad_norm"] + sorted(set(metrics) - {"loss", "grad_norm"})
        bad = next(
            (k for k in order if k in metrics and not np.all(np.isfinite(metrics[k]))),
            "gradient",
        )
        if skipped > config.max_nonfinite_steps:
            raise NonFiniteError(
                f"Non-finite {bad} at step {done} ({skipped} non-finite steps so far, "
                f"max_nonfinite_steps={config.max_nonfinite_steps}). The update was not applied "
                "and the latest checkpoint is the last good state. Lower the learning rate, or "
                "set --config.max_nonfinite_steps=N to skip up to N bad steps."
            )
        logging.warning(
            "step %d: non-finite %s, update skipped (%d of at most %d)",
            done,
            bad,
            skipped,
            config.max_nonfinite_steps,
        )
    return total


def _evaluate(exp: Experiment, state, what: str, show_progress: bool = True):
    """``exp.evaluate(state)`` with a line (process 0) naming the phase it is in: the features
    of each split, then each evaluator, and the time so far; it disappears when done."""
    from tqdm import tqdm

    bar = tqdm(
        desc=what,
        bar_format="{desc}{postfix} [{elapsed}]",  # tqdm puts ", " before the postfix
        file=sys.stdout,
        leave=False,
        disable=not show_progress or not distributed.is_primary(),
        dynamic_ncols=True,
    )
    try:
        return exp.evaluate(state, progress=bar.set_postfix_str)
    finally:
        bar.close()


def _evaluate_and_report(
    exp, state, workdir, writer, untrained, show_progress: bool = True
) -> dict[str, float]:
    step = int(jax.device_get(state.step))
    t0 = time.perf_counter()
    metrics = _evaluate(exp, state, f"evaluating step {step}", show_progress)
    results = {**_values(metrics), "eval_seconds": time.perf_counter() - t0}
    _write_json(os.path.join(workdir, f"eval_{step}.json"), results)
    rows = [[k, m.label] for k, m in metrics.items() if m.label is not None]
    _write_json(os.path.join(workdir, LABELS_FILE), {"rows": rows})  # the summary table's rows
    writer.write(step, results, kind="eval")
    if distributed.is_primary():
        print(summary_table(metrics, untrained, step), flush=True)
        fitted, total = int(results.get("eval_train_examples", len(exp.train))), len(exp.train)
        if fitted < total:
            print(subset_note(fitted, total, exp.config), flush=True)
    return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> dict:
    """--mode=eval: restores the latest checkpoint of ``workdir`` and runs the evaluations
    (with ``config.init_from.weights``: evaluates that file instead, ``evaluate_weights``)."""
    if config.init_from.get("weights"):
        return evaluate_weights(config, workdir, devices=devices)
    workdir = _open_workdir(config, workdir, devices=devices, mode="eval", create=False)
    dataset = load_data(config)
    validation.check_data(config, dataset)
    run = restore_run(workdir, devices=devices, config=config, dataset=dataset)
    exp = run.experiment
    init_run = _resolve_init_from(
        config,
        workdir,
        devices=list(exp.mesh.devices.flat),
        dataset=exp.dataset,
        train_stages=False,
    )
    exp.prepare_host(init_run)
    writer = MetricWriter(workdir)
    try:
        untrained = _read_json(os.path.join(workdir, "eval_untrained.json"))
        return _evaluate_and_report(exp, run.state, workdir, writer, untrained)
    finally:
        writer.close()


def evaluate_weights(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> dict:
    """--mode=eval with ``config.init_from.weights``: the config's evaluators on the backbone in
    that PyTorch-layout file (``jssl.models.convert``), nothing trained.

    ``workdir`` gets what a trained run's evaluation writes: config.json, ``eval_0.json``
    (``eval_untrained.json`` for the random initialisation when ``config.eval.untrained``),
    metrics.jsonl and the printed summary table.
    """
    workdir = _open_workdir(config, workdir, devices=devices, mode="eval")
    exp, _ = open_run(config, workdir, devices=devices, train_stages=False)
    save_config(config, workdir)
    writer = MetricWriter(workdir)
    try:
        state = exp.init_state(weights=False)
        untrained = None
        if config.eval.untrained:
            untrained = _values(_evaluate(exp, state, "evaluating the untrained network"))
            _write_json(os.path.join(workdir, "eval_untrained.json"), untrained)
        return _evaluate_and_report(exp, exp.with_weights(state), workdir, writer, untrained)
    finally:
        writer.close()
