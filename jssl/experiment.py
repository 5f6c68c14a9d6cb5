"""What a run is built from: ``Experiment`` (config + devices -> data, model, step) and
``restore_run`` (a finished run's workdir -> its config, model and latest state).

The trainer (jssl/trainer.py) drives an Experiment; ``restore_run`` is the one
way to reopen a run, used by ``--mode=eval``, ``config.init_from`` (a later stage
starting from an earlier run's weights) and the picture commands.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jssl import data, evaluation, metrics_log, optim, progress, sharding
from jssl.checkpoint import Checkpointer, load_saved_config
from jssl.errors import UserError
from jssl.methods import HostContext, RunInfo, get_method
from jssl.methods.base import NO_HOST, HostObject
from jssl.models import convert
from jssl.train_step import TrainState, train_step

# Data fields that decide whether two runs read the same examples.
DATA_FIELDS = (
    "name",
    "path",
    "tfds_name",
    "train_split",
    "test_split",
    "image_size",
    "data_dir",
    "val_fraction",
    "val_seed",
)


def load_data(
    config: ml_collections.ConfigDict, phase: progress.Phase = progress.silent
) -> data.Dataset:
    """The run's dataset; with ``config.data.val_fraction`` its training set is carved
    (``jssl.data.carve_validation``) and ``config.eval.split`` says which split is scored.
    ``phase`` shows long loading phases (``jssl.progress``)."""
    d = config.data
    dataset = data.load_dataset(
        d.name,
        path=d.path or None,
        image_size=d.image_size or None,
        tfds_name=d.tfds_name or None,
        train_split=d.train_split,
        test_split=d.test_split,
        data_dir=d.data_dir or None,
        cache_dir=d.cache_dir or None,
        on_bad_image=d.on_bad_image,
        num_threads=d.get("num_threads", 8),
        stream=d.get("stream", False),
        phase=phase,
    )
    return data.carve_validation(
        dataset,
        d.get("val_fraction", 0.0),
        seed=d.get("val_seed", 0),
        split=config.eval.get("split", "test"),
    )


def same_data(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> bool:
    split = lambda c: c.eval.get("split", "test")
    return all(a.data.get(f) == b.data.get(f) for f in DATA_FIELDS) and split(a) == split(b)


class Experiment:
    """Everything derived from (config, devices): data, model, optimiser, compiled step.

    ``workdir``: the run folder, when there is one (methods keep caches there).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        devices=None,
        dataset: data.Dataset | None = None,
        *,
        workdir: str | None = None,
    ):
        self.config = config
        self.workdir = os.path.abspath(workdir) if workdir else None
        self.mesh = sharding.make_mesh(devices)
        sharding.check_batch_size(config.batch_size, self.mesh)
        self.dataset = dataset or load_data(config)
        self.train = self.dataset.train
        n = len(self.train)
        if config.batch_size > n:
            raise UserError(
                f"batch_size={config.batch_size} is larger than the {n} training examples of "
                f"{self.dataset.name}; set --config.batch_size to at most {n}."
            )
        steps_per_epoch = n // config.batch_size
        total_steps = config.num_steps or max(
            1, int(math.ceil(config.num_epochs * steps_per_epoch))
        )
        self.run = RunInfo(
            total_steps=int(total_steps),
            steps_per_epoch=int(steps_per_epoch),
            num_examples=n,
            workdir=self.workdir,
        )
        self.method = get_method(config.method)
        self.model = self.method.build_model(config)
        self.predict = evaluation.Predictor(
            self.model,
            self.mesh,
            crop_size=config.augment.crop_size,
            batch_size=config.eval.batch_size,
        )
        self.tx, self.schedule = optim.make_optimizer(
            config, self.run.total_steps, self.run.steps_per_epoch
        )
        step = functools.partial(
            train_step,
            method=self.method,
            model=self.model,
            tx=self.tx,
            schedule=self.schedule,
            config=config,
            run=self.run,
        )
        rep = sharding.replicated(self.mesh)
        self.state_sharding = self._state_sharding()
        self.train_step = jax.jit(
            step,
            in_shardings=(self.state_sharding, sharding.data_sharded(self.mesh)),
            out_shardings=(self.state_sharding, rep),
            donate_argnums=(0,),
        )
        self.host: HostObject = NO_HOST  # the method's own, once ``prepare_host`` ran
        self._during: evaluation.DuringTraining | None = None  # built at its first use

    @property
    def renamed(self) -> dict[str, str]:
        """The method's renamed variable paths (old -> new), for older checkpoints."""
        return self.method.renamed(self.config) if self.method.renamed else {}

    @property
    def total_steps(self) -> int:
        return self.run.total_steps

    @property
    def steps_per_epoch(self) -> int:
        return self.run.steps_per_epoch

    def _init_variables(self):
        size = self.config.augment.crop_size
        x = jnp.zeros((2, size, size, self.train.image_shape[-1]))
        key = jax.random.split(jax.random.PRNGKey(self.config.seed))[0]
        return self.model.init(key, x, train=False)

    def _fresh_state(self) -> TrainState:
        config = self.config
        state_key = jax.random.split(jax.random.PRNGKey(config.seed))[1]
        variables = self._init_variables()
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=self.tx.init(params),
            method_state=self.method.init_method_state(params, batch_stats, config, self.run),
            rng=state_key,
            nonfinite_steps=jnp.zeros((), jnp.int32),
        )

    def _state_sharding(self):
        """The TrainState's shardings: replicated, except the method-state entries the
        method splits over the mesh (``Method.method_state_specs``)."""
        rep = sharding.replicated(self.mesh)
        specs = self.method.method_state_specs
        specs = specs(self.config, self.run, self.mesh) if specs else {}
        if not specs:
            return rep  # a prefix of the whole state
        tree = jax.tree.map(lambda _: rep, jax.eval_shape(self._fresh_state))
        ms = dict(tree.method_state)
        for key, spec in specs.items():
            ms[key] = jax.sharding.NamedSharding(self.mesh, spec)
        return tree.replace(method_state=ms)

    @property
    def method_state_sharding(self):
        s = self.state_sharding
        return s if isinstance(s, jax.sharding.Sharding) else s.method_state

    def init_state(
        self, init_run: RestoredRun | None = None, *, weights: bool = True
    ) -> TrainState:
        """Fresh TrainState on the mesh (``state_sharding``); a function of config.seed (and
        of ``init_run``, the ``config.init_from`` run, whose parameter subtrees it starts
        from, or, when ``weights``, of the backbone file ``config.init_from.weights``)."""
        config = self.config
        state = jax.jit(self._fresh_state, out_shardings=self.state_sharding)()
        if init_run is not None:
            return self._start_from(state, *self._initial_parts(state, init_run))
        if weights and config.init_from.get("weights"):
            return self.with_weights(state)
        return state

    def with_weights(self, state: TrainState) -> TrainState:
        """``state`` with its backbone read from ``config.init_from.weights``
        (``jssl.models.convert.load_backbone``), the optimiser and method state restarted."""
        return self._start_from(state, *self._weights_parts(state))

    def _start_from(self, state: TrainState, params, batch_stats) -> TrainState:
        config, method = self.config, self.method
        rep = sharding.replicated(self.mesh)

        def restart(params, batch_stats):  # optimiser and method state of the new start
            ms = method.init_method_state(params, batch_stats, config, self.run)
            return self.tx.init(params), ms

        params = jax.device_put(params, rep)
        batch_stats = jax.device_put(batch_stats, rep)
        opt_state, method_state = jax.jit(restart, out_shardings=(rep, self.method_state_sharding))(
            params, batch_stats
        )
        return state.replace(
            params=params, batch_stats=batch_stats, opt_state=opt_state, method_state=method_state
        )

    def _weights_parts(self, state: TrainState):
        """``state``'s params and batch_stats with the backbone read from the file
        ``config.init_from.weights``."""
        f = self.config.init_from
        if "backbone" not in state.params:
            raise UserError(
                f"config.init_from.weights: the {self.config.method} model has no backbone to "
                f"load weights into (its parameters: {sorted(state.params)}); use a method whose "
                "model has one, e.g. --config=configs/simclr.py"
            )
        stats = state.batch_stats or {}
        target = {"params": state.params["backbone"], "batch_stats": stats.get("backbone", {})}
        loaded = convert.load_backbone(
            os.path.expanduser(f.weights),
            target,
            prefix=f.get("prefix", ""),
            input_norm=f.get("input_norm", "auto"),
        )
        params = {**state.params, "backbone": loaded["params"]}
        if loaded.get("batch_stats"):
            stats = {**stats, "backbone": loaded["batch_stats"]}
        return params, stats

    def _initial_parts(self, state: TrainState, init_run: RestoredRun):
        """``state``'s params and batch_stats with the subtrees ``config.init_from.params``
        taken from ``init_run`` (through the method's ``adapt_init``), shapes checked."""
        names = tuple(self.config.init_from.params)
        src = init_run.state
        missing = [n for n in names if n not in src.params]
        if missing:
            raise UserError(
                f"The init_from run {init_run.workdir} has no {missing} parameters (it has "
                f"{sorted(src.params)}); set --config.init_from.params to some of those."
            )
        parts = {n: src.params[n] for n in names}
        if self.method.adapt_init is not None:
            parts = self.method.adapt_init(parts, src.method_state, self.config)
        params = transplant(state.params, parts, init_run.workdir)
        stats = {n: src.batch_stats[n] for n in names if src.batch_stats and n in src.batch_stats}
        batch_stats = transplant(state.batch_stats, stats, init_run.workdir)
        return params, batch_stats

    def prepare_host(
        self, init_run: RestoredRun | None = None, phase: progress.Phase = progress.silent
    ):
        """Runs the method's ``prepare`` hook once; returns (and keeps) its host object.
        ``phase`` shows its long phases (``progress.shown``: on the terminal)."""
        if self.method.prepare is not None:
            ctx = HostContext(
                train=self.train,
                predict=self.predict,
                mesh=self.mesh,
                init_run=init_run,
                phase=phase,
            )
            self.host = self.method.prepare(self.config, self.run, ctx)
        return self.host

    def global_batch(self, step: int) -> dict[str, jax.Array]:
        """This step's global batch, sharded over the mesh (a function of seed and step).

        This process reads only its own slice of the batch from the source.
        """
        return next(self.batches(step, step + 1))

    def batches(self, start: int, stop: int | None = None):
        """The global batches of steps ``start .. stop - 1`` (default: to the end of the run).

        Streamed sources are decoded ahead by grain threads (``config.data.num_threads``,
        ``prefetch``, ``num_workers``); the method's ``batch_extras`` are added here, on the
        calling thread, after the host updates of the steps before.
        """
        host = self.host
        for step, idx, images in self.host_batches(start, stop):
            batch = {"image": images, "index": idx.astype(np.int32)}
            batch.update(host.batch_extras(idx, step))
            yield sharding.put_global_batch(batch, self.mesh)

    def host_batches(self, start: int, stop: int | None = None):
        """``jssl.data.host_batches`` of this run: (step, indices, images) of this process's
        slice of steps ``start .. stop - 1``, read and decoded as ``config.data`` says."""
        d = self.config.data
        return data.host_batches(
            self.train,
            self.config.batch_size,
            seed=self.config.seed,
            start=start,
            stop=self.total_steps if stop is None else stop,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            num_threads=d.get("num_threads", 8),
            prefetch=d.get("prefetch", 2),
            num_workers=d.get("num_workers", 0),
        )

    def eval_train_cap(self) -> int:
        """How many training examples the evaluators fit on at most (0: all of them):
        ``eval.max_train_examples``, else on the CPU backend ``eval.cpu_max_train_examples``."""
        e = self.config.eval
        if e.max_train_examples or self.mesh.devices.flat[0].platform != "cpu":
            return e.max_train_examples
        return e.get("cpu_max_train_examples", 0)

    def evaluators(self) -> tuple[str, ...]:
        """The method's evaluators, then the config's ``eval.extra_evaluators`` it lacks."""
        extra = self.config.eval.get("extra_evaluators", ())
        return self.method.evaluators + tuple(n for n in extra if n not in self.method.evaluators)

    def evaluate(self, state: TrainState, progress=None) -> dict[str, evaluation.Metric]:
        """The method's evaluators (and its host object's metrics) on the frozen network.

        The evaluators fit on at most ``eval_train_cap()`` training examples (a fixed
        subset drawn from the seed; their count is the result "eval_train_examples") and
        score the test split. ``progress(phase)`` is called as each phase starts
        (``EvalContext.progress``).
        """
        config = self.config
        train = data.take_subset(self.train, self.eval_train_cap(), seed=config.seed)
        ctx = evaluation.EvalContext(
            config=config,
            predict=self.predict,
            state=state,
            train=train,
            test=self.dataset.test,
            num_classes=self.dataset.num_classes,
            class_names=self.dataset.class_names,
            workdir=self.workdir,
            teacher=self.method.teacher,
            progress=progress or evaluation.evaluators.silent,
        )
        results = evaluation.run_evaluators(self.evaluators(), ctx)
        results.update(self.host.metrics())
        results["eval_train_examples"] = evaluation.Metric(len(train))
        return results

    def evaluate_during(self, state: TrainState) -> dict[str, float]:
        """The cheap kNN of ``config.eval.every_steps`` on its fixed subsets (state read only)."""
        if self._during is None:
            self._during = evaluation.DuringTraining.build(
                self.config,
                self.predict,
                self.train,
                self.dataset.test,
                num_classes=self.dataset.num_classes,
                evaluators=self.method.evaluators,
                teacher=self.method.teacher,
                # a resumed run's first RankMe, from the sessions before it
                first_rankme=metrics_log.first(self.workdir, evaluation.during.KIND, "rankme")
                if self.workdir
                else None,
            )
        return self._during(state)

    def during_warnings(self, results: dict[str, float]) -> list[str]:
        """Collapse warnings of one ``evaluate_during`` result: its RankMe against the run's
        first."""
        return self._during.collapse_warnings(results)


def transplant(tree: dict, parts: dict, source: str) -> dict:
    """``tree`` with its top-level subtrees replaced by ``parts``, checking structure and shapes."""
    out = dict(tree)
    for name, new in parts.items():
        old = tree.get(name)
        same = old is not None and jax.tree.structure(old) == jax.tree.structure(new)
        if same:
            same = all(
                a.shape == b.shape
                for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
            )
        if not same:
            raise UserError(
                f"The {name!r} parameters of the init_from run {source} do not fit this model; "
                "set --config.model.name / --config.model.kwargs.* as in that run's config.json."
            )
        out[name] = new
    return out


# ----------------------------------------------------------------------------- finished runs


def _tuples(x):
    """JSON lists back to tuples (config tuples such as model widths)."""
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def config_from_json(saved: dict) -> ml_collections.ConfigDict:
    """A config written as JSON (config.json, a feature file's meta) back as a ConfigDict."""
    return ml_collections.ConfigDict(_tuples(saved))


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with (its config.json)."""
    saved = load_saved_config(workdir)
    if saved is None:
        raise UserError(
            f"{workdir} holds no jssl run (no config.json); give the workdir of a run, "
            "e.g. one of python train.py --config=configs/simclr.py:digits --workdir=W."
        )
    return config_from_json(saved)


def run_finished(workdir: str) -> bool:
    """True when ``workdir`` holds a run that trained to its end (its final evaluation exists)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return False
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
    return bool(steps) and os.path.exists(os.path.join(workdir, f"eval_{max(steps)}.json"))


@dataclasses.dataclass
class RestoredRun:
    """A run reopened from its workdir: its config, Experiment and latest TrainState."""

    workdir: str
    config: ml_collections.ConfigDict
    experiment: Experiment
    state: TrainState

    @property
    def model(self):
        return self.experiment.model

    @property
    def dataset(self) -> data.Dataset:
        return self.experiment.dataset

    def predict(
        self,
        source: data.ImageSource,
        select="features",
        network="student",
        *,
        sharded=False,
        progress=None,
    ):
        """The restored network's eval-mode ``select`` of every image of ``source``: numpy,
        or with ``sharded`` a global array left on the devices (``Predictor.sharded``);
        ``progress(done, n)`` as the Predictor's."""
        variables = evaluation.network_variables(
            self.state, network, teacher=self.experiment.method.teacher
        )
        predict = self.experiment.predict
        return (predict.sharded if sharded else predict)(
            variables, source, select, progress=progress
        )


def restore_run(
    workdir: str,
    *,
    devices=None,
    dataset: data.Dataset | None = None,
    config: ml_collections.ConfigDict | None = None,
) -> RestoredRun:
    """The latest checkpoint of the run in ``workdir``, built from its own config.json.

    ``dataset``, when given, is used instead of loading the run's data (pass it
    only when it is the same data: ``same_data``); ``config`` replaces the saved
    config. The method's ``prepare`` hook is not run.
    """
    workdir = os.path.abspath(workdir)
    run_config = config if config is not None else saved_config(workdir)
    exp = Experiment(run_config, devices, dataset=dataset, workdir=workdir)
    ckpt = Checkpointer(workdir, keep=run_config.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            raise UserError(
                f"No checkpoint in {ckpt.directory}: train first with --mode=train and this "
                "--workdir."
            )
        # the checkpoint replaces all
        state = ckpt.restore(exp.init_state(weights=False), renamed=exp.renamed)
    finally:
        ckpt.close()
    return RestoredRun(workdir=workdir, config=run_config, experiment=exp, state=state)
