"""What a method is: a few pure functions plugged into the one generic train step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jssl import losses, progress

PyTree = Any
# loss(params, batch_stats, views, method_state, step, key)
#   -> (loss, (new_batch_stats, new_method_state, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[PyTree, PyTree, dict]]]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a method may know about the run it is part of (static for the whole run)."""

    total_steps: int  # updates the run applies (the schedules span them)
    steps_per_epoch: int
    num_examples: int  # training examples (e.g. rows of SeLa's label table)
    workdir: str | None = None  # the run folder, for caches (None without one)

    def epochs_to_steps(self, epochs: float) -> int:
        return int(round(epochs * self.steps_per_epoch))


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a method's ``data_problems`` may know of the loaded training data."""

    name: str  # the data set's
    num_examples: int
    image_shape: tuple[int, int, int]  # (H, W, C)
    total_steps: int | None  # updates the run applies (None: the batch does not fit)


@dataclasses.dataclass(frozen=True)
class HostContext:
    """What a method's ``prepare`` hook may use on the host, built by the trainer.

    ``train`` is the training ImageSource; ``predict`` runs this run's model
    (eval mode) over a source; ``mesh`` is the device mesh; ``init_run`` is the
    restored ``config.init_from`` run (``RestoredRun``: config, model, state,
    predict) or None; ``phase(name)`` shows a long host phase (mining, relabelling):
    ``with ctx.phase("SeLa: relabelling") as report: ... report(done, total)``.
    """

    train: Any  # jssl.data.ImageSource
    predict: Any  # jssl.evaluation.Predictor
    mesh: Any  # jax.sharding.Mesh
    init_run: Any = None
    phase: progress.Phase = progress.silent


class HostObject:
    """A method's host-side state, which its ``prepare`` hook returns (SCAN's neighbour
    table, SeLa's compiled relabelling). The trainer calls these three; each does
    nothing here, and a method's host object overrides what it needs.
    """

    def batch_extras(self, indices, step: int) -> dict:
        """Extra per-example arrays for the batch of ``indices`` [b] at ``step``."""
        return {}

    def update(self, state, step: int):
        """The TrainState after the update that made ``step`` updates in all."""
        return state

    def metrics(self) -> dict:
        """Extra evaluation figures ({name: jssl.evaluation.Metric})."""
        return {}


NO_HOST = HostObject()  # the host object of a method without ``prepare``


@dataclasses.dataclass(frozen=True)
class Method:
    """A self-supervised method as data: no method owns a train loop or sees the trainer.

    Pure functions, run on device inside the one generic jitted step:

      build_model: config -> Flax module whose ``__call__(x, *, train)`` returns
        ``(outputs, aux)`` with ``aux["features"]`` the representation used by
        evaluation. (Every method.)
      make_views: (key, batch, config) -> the views the loss needs; batch["image"]
        is uint8 [B, H, W, C], batch["index"] int32 [B], plus what the host
        object's ``batch_extras`` adds. (Every method.)
      make_loss: (model, config, run) -> LossFn. (Every method; ``run`` binds
        schedules over the run's length, e.g. DINO's teacher temperature.)
      init_method_state: (params, batch_stats, config, run) -> method state pytree
        saved in every checkpoint (DINO's teacher and centre, SeLa's [H, N]
        label table, the clustering heads' running losses); ``{}`` by default.
      after_update: optional (new params, new batch_stats, method_state, step,
        config, run) -> (params, method_state), inside the step after the optimiser:
        the EMA teacher of DINO and the momentum-encoder methods, SwAV's prototypes
        put back on the unit sphere.
      method_state_specs: optional (config, run, mesh) -> {key: PartitionSpec} for
        top-level method-state entries split over the mesh's "data" axis instead
        of replicated (SeLa's label table, split by example); the rest is
        replicated. The step sees the global arrays either way.

    Host side, outside the step:

      prepare: optional (config, run, HostContext) -> ``HostObject``, called once
        when a run is built (fresh or resumed). The object is the method's
        host-side state (SCAN's neighbour table, SeLa's compiled relabelling);
        the trainer calls its three methods:
          ``batch_extras(indices [b], step) -> dict`` of extra per-example
          arrays for the batch (SCAN's neighbour images, drawn from (seed, step));
          ``update(state, step) -> state`` after every update, ``step`` being the
          number of updates applied, counted on the host (SeLa's relabelling);
          ``metrics() -> dict[str, Metric]`` of extra evaluation figures (SCAN's
          neighbour label agreement).
      adapt_init: optional (params, method_state, config) -> params, given the
        parameter subtrees taken from the ``config.init_from`` run and that
        run's method state, returns the subtrees to start from (self-labelling
        keeps the SCAN run's lowest-loss head).
      collapse_warnings: optional (logged metrics, config) -> warning strings,
        checked at every logging interval.
      picture_rows: optional (model, variables, images uint8 [N, H, W, C], their eval
        views x float32 [N, S, S, C], key, config) -> rows of [N, h, w, C] images in
        [0, 1]: the method's inputs and outputs, drawn by ``python -m jssl.visualize
        reconstructions`` and the report (a decoder's reconstructions, MAE's patches).
      evaluators: names in ``jssl.evaluation.EVALUATORS`` run at evaluation,
        e.g. ("knn", "linear_probe", "kmeans", "cluster_heads").
      fields: {dotted config path: check} of every config field the method reads
        beyond the base config (its own block, the augment fields of its views),
        each check from ``jssl.checks``; ``jssl.validation`` requires them when the
        method runs and checks them wherever a config has them.
      check: optional values -> problems: the combinations of the method's fields
        that cannot work. ``values`` maps dotted paths to the values that passed
        their checks, plus ``"model.patch_size"`` (the ViT's patch, None for other
        backbones); each problem starts with the field it names ("mae.mask_ratio=1.0:
        masks all ...; use ...").
      data_problems: optional (config, DataInfo) -> problems that show once the data
        is loaded (more neighbours than examples, a label table too large).
      teacher: the method-state entry holding an EMA copy of the network
        (``jssl.ema.EmaTeacherState``), which evaluation, pictures and export can
        use as the "teacher" network (``jssl.evaluation.network_variables``): DINO's
        and MoCo's teacher, BYOL's target. The default network of pictures and
        export (``default_network``) is the teacher when the method evaluates it
        (the ``teacher_knn`` evaluator), else the trained student.
      renamed: optional config -> {old path: new path} of the model's variables whose
        names changed since checkpoints were written ("projector" -> "head"); a
        checkpoint in the old names is read through it (``jssl.checkpoint.rename``).

    The optimiser comes from ``config.optim`` (``jssl.optim``), not the method.
    """

    name: str
    build_model: Callable[[ml_collections.ConfigDict], nn.Module]
    make_views: Callable[[jax.Array, dict, ml_collections.ConfigDict], PyTree]
    make_loss: Callable[[nn.Module, ml_collections.ConfigDict, RunInfo], LossFn]
    init_method_state: Callable[..., PyTree] = lambda params, batch_stats, config, run: {}
    after_update: Callable[..., PyTree] | None = None
    method_state_specs: Callable[..., dict] | None = None
    prepare: Callable[[ml_collections.ConfigDict, RunInfo, HostContext], HostObject] | None = None
    adapt_init: Callable[[PyTree, PyTree, ml_collections.ConfigDict], PyTree] | None = None
    collapse_warnings: Callable[[dict, ml_collections.ConfigDict], list[str]] | None = None
    picture_rows: Callable[..., list] | None = None
    evaluators: tuple[str, ...] = ("knn", "linear_probe", "kmeans")
    fields: dict[str, Callable[[Any], str | None]] = dataclasses.field(default_factory=dict)
    check: Callable[[dict], list[str]] | None = None
    data_problems: Callable[[ml_collections.ConfigDict, DataInfo], list[str]] | None = None
    teacher: str | None = None
    renamed: Callable[[ml_collections.ConfigDict], dict[str, str]] | None = None

    @property
    def default_network(self) -> str:
        """The network pictures and export use by default: "teacher" when the method
        evaluates its EMA copy (DINO, MoCo v2), else "student"."""
        return "teacher" if self.teacher and "teacher_knn" in self.evaluators else "student"


def apply_train(model: nn.Module, params, batch_stats, x: jax.Array, *, method=None):
    """Forward pass in training mode; returns (outputs, aux, new_batch_stats).

    ``method``: another method of the module than ``__call__`` (``EncoderWithHead.project``).
    """
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
        (out, aux), updated = model.apply(
            variables, x, train=True, method=method, mutable=["batch_stats"]
        )
        return out, aux, updated["batch_stats"]
    out, aux = model.apply(variables, x, train=True, method=method)
    return out, aux, batch_stats


def classification_loss(model: nn.Module, accuracy_name: str) -> LossFn:
    """LossFn for pretext tasks whose views are (inputs, labels): cross-entropy on the logits.

    Logs ``accuracy_name`` (top-1 on the pretext labels) and ``h_std``, the
    collapse monitor on the backbone features ``aux["features"]``.
    """

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x, labels = views
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)
        metrics = {
            accuracy_name: losses.top1_accuracy(logits, labels),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return losses.classification_loss(logits, labels), (batch_stats, method_state, metrics)

    return loss_fn
