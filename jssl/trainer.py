"""train_and_evaluate(config, workdir): mesh, data, init, loop, logging, checkpoints, evaluation."""

from __future__ import annotations

import functools
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

from jssl import augment, data, evaluation, optim, sharding
from jssl.checkpoint import Checkpointer, load_saved_config, save_config
from jssl.errors import UserError
from jssl.methods import get_method
from jssl.train_step import TrainState, train_step

# Fields that may differ between a saved run and its resumption.
RESUMABLE_FIELDS = (
    "num_epochs",
    "num_steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoints",
    "allow_config_change",
    "max_nonfinite_steps",
    "max_train_seconds",
    "eval.",
    "data.cache_dir",
    "data.data_dir",
    "data.path",
)

EVAL_METRICS = (
    ("knn_top1", "kNN top-1"),
    ("linear_top1", "linear-probe top-1"),
    ("cluster_acc", "clustering ACC"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("head_acc", "head ACC (Hungarian)"),
    ("head_acc_many_to_one", "head ACC (many-to-one)"),
    ("head_nmi", "head NMI"),
    ("head_ari", "head ARI"),
    ("neighbor_acc", "neighbour label agreement"),
)


class ConfigMismatchError(UserError):
    """The workdir holds a run with another config."""


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""


class Experiment:
    """Everything derived from (config, devices): data, model, optimiser, compiled step."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        devices=None,
        dataset=None,
        *,
        workdir: str | None = None,
        restore_only: bool = False,
    ):
        """``workdir``: the run folder, when there is one (methods keep caches and
        earlier stages there). ``restore_only``: built only to restore a finished
        run's checkpoint, so method hooks skip their stage work (mining, training
        earlier stages) and only shape the state."""
        self.config = config
        self.workdir = os.path.abspath(workdir) if workdir else None
        self.restore_only = restore_only
        self.mesh = sharding.make_mesh(devices)
        sharding.check_batch_size(config.batch_size, self.mesh)
        d = config.data
        self.dataset = dataset or data.load_dataset(
            d.name,
            path=d.path or None,
            image_size=d.image_size or None,
            tfds_name=d.tfds_name or None,
            train_split=d.train_split,
            test_split=d.test_split,
            data_dir=d.data_dir or None,
            cache_dir=d.cache_dir or None,
            on_bad_image=d.on_bad_image,
        )
        n = len(self.dataset.train.labels)
        if config.batch_size > n:
            raise UserError(
                f"batch_size={config.batch_size} is larger than the {n} training examples of "
                f"{self.dataset.name}; set --config.batch_size to at most {n}."
            )
        self.steps_per_epoch = n // config.batch_size
        self.total_steps = config.num_steps or max(
            1, int(math.ceil(config.num_epochs * self.steps_per_epoch))
        )
        self.method = get_method(config.method)
        self.model = self.method.build_model(config)
        if self.method.prepare is not None:
            self.method.prepare(self)
        make_optimizer = self.method.make_optimizer or optim.make_optimizer
        self.tx, self.schedule = make_optimizer(config, self.total_steps, self.steps_per_epoch)
        step = functools.partial(
            train_step,
            method=self.method,
            model=self.model,
            tx=self.tx,
            schedule=self.schedule,
            config=config,
        )
        rep = sharding.replicated(self.mesh)
        self.train_step = jax.jit(
            step,
            in_shardings=(rep, sharding.data_sharded(self.mesh)),
            out_shardings=(rep, rep),
            donate_argnums=(0,),
        )

    def init_state(self) -> TrainState:
        """Fresh TrainState, replicated over the mesh; a function of config.seed only."""
        config = self.config
        c = self.dataset.train.images.shape[-1]
        size = config.augment.crop_size

        def init():
            rng = jax.random.PRNGKey(config.seed)
            init_key, state_key = jax.random.split(rng)
            variables = self.model.init(init_key, jnp.zeros((2, size, size, c)), train=False)
            params = variables["params"]
            return TrainState(
                step=jnp.zeros((), jnp.int32),
                params=params,
                batch_stats=variables.get("batch_stats", {}),
                opt_state=self.tx.init(params),
                method_state=self.method.init_method_state(params, config),
                rng=state_key,
                nonfinite_steps=jnp.zeros((), jnp.int32),
            )

        state = jax.jit(init, out_shardings=sharding.replicated(self.mesh))()
        if self.method.post_init is not None:
            state = self.method.post_init(self, state)
        return state

    def global_batch(self, step: int) -> dict[str, jax.Array]:
        """This step's global batch, sharded over the mesh (a function of seed and step)."""
        idx = data.host_batch_indices(
            len(self.dataset.train.labels),
            self.config.batch_size,
            seed=self.config.seed,
            step=step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        batch = {"image": self.dataset.train.images[idx], "index": idx.astype(np.int32)}
        if self.method.batch_extras is not None:
            batch.update(self.method.batch_extras(self, idx, step))
        return sharding.put_global_batch(batch, self.mesh)

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """kNN, linear probe and k-means clustering on the frozen representation.

        ``config.eval.representation``: "features" (default), the backbone's
        pooled output h before any head; "output", the model's output (e.g.
        SimCLR's projection z).
        """
        config = self.config
        size = (config.augment.crop_size, config.augment.crop_size)
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        batch_size = config.eval.batch_size
        sharding.check_batch_size(batch_size, self.mesh)
        data_sharding = sharding.data_sharded(self.mesh)

        representation = config.eval.get("representation", "features")
        if representation not in ("features", "output"):
            raise UserError(
                f"config.eval.representation={representation!r}: use 'features' (the backbone's "
                "pooled h) or 'output' (the model's output, e.g. SimCLR's projection z)."
            )

        @jax.jit
        def features(variables, images):
            x = augment.eval_view(images, size=size)
            out, aux = self.model.apply(variables, x, train=False)
            return (out if representation == "output" else aux["features"]).astype(jnp.float32)

        n_devices = self.mesh.devices.size

        def apply_fn(images):
            # A split smaller than the eval batch gives batches of N rows; pad them to a
            # multiple of the device count (more devices than examples) and drop the padding.
            n = images.shape[0]
            if n % n_devices:
                images = jnp.pad(images, [(0, -n % n_devices)] + [(0, 0)] * (images.ndim - 1))
            return features(variables, jax.device_put(images, data_sharding))[:n]

        train, test = self.dataset.train, self.dataset.test
        cap = config.eval.max_train_examples
        if cap and cap < len(train.labels):
            keep = np.sort(np.random.default_rng(config.seed).permutation(len(train.labels))[:cap])
            train = data.Split(images=train.images[keep], labels=train.labels[keep])
        f_train = evaluation.extract_features(apply_fn, train.images, batch_size=batch_size)
        f_test = evaluation.extract_features(apply_fn, test.images, batch_size=batch_size)
        results = evaluation.evaluate_features(
            f_train,
            train.labels,
            f_test,
            test.labels,
            num_classes=self.dataset.num_classes,
            knn_k=config.eval.knn_k,
            knn_temperature=config.eval.knn_temperature,
            probe_epochs=config.eval.probe_epochs,
            seed=config.seed,
        )
        if self.method.extra_eval is not None:
            results.update(self.method.extra_eval(self, state))
        return results


# ----------------------------------------------------------------------------- config checks


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """Non-resumable fields whose values differ between a saved run and ``config``."""
    current = _flatten(json.loads(config.to_json_best_effort()))
    saved = _flatten(saved)
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        before, now = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if before != now:
            diffs.append(f"{key}: saved {before!r}, now {now!r}")
    return diffs


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
    saved = load_saved_config(workdir)
    if saved is None or config.allow_config_change:
        return
    diffs = config_differences(saved, config)
    if diffs:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config ({'; '.join(diffs)}). "
            "Use a new --workdir, or pass --config.allow_config_change=True to resume anyway."
        )


# ----------------------------------------------------------------------------- logging


class MetricWriter:
    """metrics.jsonl (one JSON object per line) and TensorBoard events."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, float], *, kind: str = "train") -> None:
        self.jsonl.write(json.dumps({"step": step, "kind": kind, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(f"{kind}/{k}", v, step)
        self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()


def summary_table(trained: dict[str, float], untrained: dict[str, float] | None, step: int) -> str:
    """The trained network's figures beside the untrained network's, and the change."""
    names = dict(EVAL_METRICS)
    keys = [k for k, _ in EVAL_METRICS if k in trained] + sorted(
        k for k in trained if k not in names and k != "eval_seconds"
    )
    header = f"{'metric':<26} {'untrained':>10} {'step ' + str(step):>12} {'change':>8}"
    rows = []
    for key in keys:
        t = trained[key]
        u = (untrained or {}).get(key, float("nan"))
        rows.append(f"{names.get(key, key):<26} {u:>10.4f} {t:>12.4f} {t - u:>+8.4f}")
    rule = "-" * len(header)
    return "\n".join([rule, header, rule, *rows, rule])


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history))
    return {k: float(np.mean(v)) for k, v in stacked.items()}


class _Preemption:
    """Sets a flag on SIGTERM so the loop saves at the next step boundary and exits 0."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ----------------------------------------------------------------------------- entry points


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices=None,
    show_progress: bool = True,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

    ``stop_at_step`` interrupts the run after that many updates, saving a
    checkpoint as a preemption would (the schedules still span the full run).

    Returns {"state", "eval", "untrained_eval"}; "eval" is None for an
    interrupted run.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_resumable(config, workdir)
    exp = Experiment(config, devices, workdir=workdir)
    save_config(config, workdir)
    ckpt = Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        save_every=config.checkpoint_every,
        async_save=config.async_checkpoints,
    )
    writer = MetricWriter(workdir)
    try:
        state = ckpt.restore_or_init(exp.init_state())
        start = int(jax.device_get(state.step))
        untrained_path = os.path.join(workdir, "eval_untrained.json")
        if start == 0 and config.eval.untrained and not os.path.exists(untrained_path):
            logging.info("Evaluating the untrained network")
            _write_json(untrained_path, exp.evaluate(state))
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
        state = _train_loop(exp, state, start, ckpt, writer, show_progress, stop_at_step)
        step = int(jax.device_get(state.step))
        if step < exp.total_steps:  # interrupted: state saved, nothing to evaluate yet
            return {"state": state, "eval": None, "untrained_eval": untrained}
        results = _evaluate_and_report(exp, state, workdir, writer, untrained)
        return {"state": state, "eval": results, "untrained_eval": untrained}
    finally:
        writer.close()
        ckpt.close()


def _train_loop(exp: Experiment, state, start, ckpt, writer, show_progress, stop_at_step=None):
    from tqdm import tqdm

    config = exp.config
    history: list[dict[str, jax.Array]] = []
    bar = tqdm(
        total=exp.total_steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
        file=sys.stdout,
    )
    t0, steps_in_interval = time.perf_counter(), 0
    deadline = time.monotonic() + config.max_train_seconds if config.max_train_seconds else math.inf
    # Steps since the last non-finite check: checked before every log and every save, so
    # a checkpoint never follows an unchecked bad step.
    unchecked: list[tuple[int, dict[str, jax.Array]]] = []
    skipped = int(jax.device_get(state.nonfinite_steps))
    with _Preemption() as preemption:
        for step in range(start, exp.total_steps):
            state, metrics = exp.train_step(state, exp.global_batch(step))
            if exp.method.host_update is not None:
                state = exp.method.host_update(exp, state)
            history.append(metrics)
            steps_in_interval += 1
            bar.update(1)
            done = step + 1
            unchecked.append((done, metrics))
            stop = preemption.requested or done == stop_at_step or time.monotonic() > deadline
            log_due = done % config.log_every == 0 or done == exp.total_steps
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
                    for warning in exp.method.collapse_warnings(logged, config):
                        logging.warning("step %d: %s", done, warning)
                        bar.write(f"warning: step {done}: {warning}")
                writer.write(done, logged)
                bar.set_postfix(
                    loss=f"{logged['loss']:.4f}", img_s=f"{logged['images_per_sec']:.0f}"
                )
            if save_due:
                ckpt.save(state)
            if stop:
                logging.warning("Stopping at step %d (saved); rerun to resume.", done)
                ckpt.wait()
                break
    bar.close()
    return state


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


def _evaluate_and_report(exp, state, workdir, writer, untrained) -> dict[str, float]:
    step = int(jax.device_get(state.step))
    t0 = time.perf_counter()
    results = exp.evaluate(state)
    results["eval_seconds"] = time.perf_counter() - t0
    _write_json(os.path.join(workdir, f"eval_{step}.json"), results)
    writer.write(step, results, kind="eval")
    print(summary_table(results, untrained, step), flush=True)
    return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, devices=None) -> dict:
    """--mode=eval: restores the latest checkpoint of ``workdir`` and runs the evaluations."""
    workdir = os.path.abspath(workdir)
    check_resumable(config, workdir)
    exp = Experiment(config, devices, workdir=workdir)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            raise UserError(
                f"No checkpoint in {ckpt.directory}: "
                "train first with --mode=train and this --workdir."
            )
        state = ckpt.restore(exp.init_state())
    finally:
        ckpt.close()
    writer = MetricWriter(workdir)
    try:
        untrained = _read_json(os.path.join(workdir, "eval_untrained.json"))
        return _evaluate_and_report(exp, state, workdir, writer, untrained)
    finally:
        writer.close()
