"""Evaluators: small functions a method selects by name, each returning named metrics.

An evaluator is ``(EvalContext) -> dict[str, Metric]``. The trainer runs the
method's ``evaluators`` in order and prints the metrics that have a ``label``
(the summary table); every value goes to ``eval_<step>.json``. The trainer
knows no metric name: the names and labels are the evaluators'.

Features are computed once per (network, split) and shared by the evaluators
of one evaluation (``EvalContext.features``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jssl import pretext
from jssl.checks import MAX_STEPS, Check, integer
from jssl.data.core import ImageSource, take_subset
from jssl.errors import UserError
from jssl.evaluation import clustering, plots, rank
from jssl.evaluation.knn import knn_accuracy
from jssl.evaluation.linear_probe import linear_probe
from jssl.evaluation.predict import SELECTORS, Predictor, network_variables

REPRESENTATIONS = ("features", "output")


def silent(phase: str) -> None:
    """The default ``EvalContext.progress``: says nothing."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """One evaluation figure; ``label`` names its row in the summary table (None: JSON only,
    for an index or a count)."""

    value: float
    label: str | None = None


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may read: the trained state, the data, the forward pass."""

    config: ml_collections.ConfigDict
    predict: Predictor
    state: Any  # TrainState
    train: ImageSource  # the (capped) training subset the evaluators fit on
    test: ImageSource
    num_classes: int
    class_names: tuple[str, ...]
    workdir: str | None = None
    teacher: str | None = None  # the method-state entry of the EMA copy (Method.teacher)
    progress: Callable[[str], None] = silent  # called with each phase's name as it starts
    _features: dict = dataclasses.field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(jax.device_get(self.state.step))

    def variables(self, network: str = "student") -> dict:
        """Flax variables of the trained network ("student") or the EMA teacher ("teacher")."""
        return network_variables(self.state, network, teacher=self.teacher)

    def features(self, split: str, network: str = "student") -> np.ndarray:
        """[N, D] float32 representation (``config.eval.representation``) of "train" or "test"."""
        representation = self.config.eval.get("representation", "features")
        if representation not in REPRESENTATIONS:
            raise UserError(
                f"config.eval.representation={representation!r}: use 'features' (the backbone's "
                "pooled h) or 'output' (the model's output, e.g. SimCLR's projection z)."
            )
        key = (split, network, representation)
        if key not in self._features:
            source = self.train if split == "train" else self.test
            what = f"{network}'s {representation}"
            self._features[key] = self.predict(
                self.variables(network),
                source,
                representation,
                progress=lambda done, n: self.progress(f"{what}: {done:,} of {n:,} {split} images"),
            )
        return self._features[key]


Evaluator = Callable[[EvalContext], dict[str, Metric]]


def knn(ctx: EvalContext) -> dict[str, Metric]:
    """Weighted kNN top-1 (k = eval.knn_k, T = eval.knn_temperature) on cosine similarity."""
    return {"knn_top1": Metric(_knn(ctx, "student"), "kNN top-1")}


def teacher_knn(ctx: EvalContext) -> dict[str, Metric]:
    """kNN top-1 of the EMA teacher's representation (DINO evaluates the teacher)."""
    return {"teacher_knn_top1": Metric(_knn(ctx, "teacher"), "teacher kNN top-1")}


def _knn(ctx: EvalContext, network: str) -> float:
    return float(
        knn_accuracy(
            ctx.features("train", network),
            ctx.train.labels,
            ctx.features("test", network),
            ctx.test.labels,
            num_classes=ctx.num_classes,
            k=min(ctx.config.eval.knn_k, len(ctx.train)),  # a small subset during training
            temperature=ctx.config.eval.knn_temperature,
        )
    )


def linear_probe_top1(ctx: EvalContext) -> dict[str, Metric]:
    """Linear probe (eval.probe_epochs) on the frozen representation, top-1 on the test split."""
    probe = linear_probe(
        ctx.features("train"),
        ctx.train.labels,
        ctx.features("test"),
        ctx.test.labels,
        num_classes=ctx.num_classes,
        epochs=ctx.config.eval.probe_epochs,
        seed=ctx.config.seed,
        progress=lambda done, epochs: ctx.progress(f"linear probe: epoch {done} of {epochs}"),
    )
    return {"linear_top1": Metric(probe["test_top1"], "linear-probe top-1")}


def kmeans_clustering(ctx: EvalContext) -> dict[str, Metric]:
    """k-means with as many clusters as classes on the test representation: ACC, NMI, ARI."""
    labels = np.asarray(ctx.test.labels)
    clusters = clustering.kmeans(
        ctx.features("test"), num_clusters=ctx.num_classes, seed=ctx.config.seed
    )
    counts = dict(num_classes=ctx.num_classes, num_clusters=ctx.num_classes)
    return {
        "cluster_acc": Metric(
            float(clustering.cluster_accuracy(labels, clusters, **counts)), "clustering ACC"
        ),
        "nmi": Metric(float(clustering.nmi(labels, clusters, **counts)), "NMI"),
        "ari": Metric(float(clustering.ari(labels, clusters, **counts)), "ARI"),
    }


def rankme_score(ctx: EvalContext) -> dict[str, Metric]:
    """RankMe (label-free) of the test representation: its effective rank, in [1, D]."""
    return {"rankme": Metric(float(rank.rankme(ctx.features("test"))), "RankMe")}


@dataclasses.dataclass(frozen=True)
class AugmentedViews:
    """A Predictor selector: ``select`` of ``views`` random crops (and flips) of each image,
    [b, views, ...]. Frozen, so equal settings reuse one compiled program. View v of the
    image at source row r is drawn from ``fold_in(fold_in(key(seed), v), r)``: the same for
    any batch size or device count, and different for every image."""

    select: str
    views: int
    scale: tuple[float, float]
    flip: bool
    seed: int
    per_row = True  # the Predictor passes each image's source row

    def __call__(self, model, variables, x: jax.Array, rows: jax.Array) -> jax.Array:
        crop = functools.partial(
            pretext.crop_flip_view, size=x.shape[1], scale=self.scale, flip=self.flip
        )

        def one(view_key):
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(view_key, rows)
            return SELECTORS[self.select](model, variables, jax.vmap(crop)(keys, x))

        base = jax.random.key(self.seed)
        view_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, jnp.arange(self.views))
        return jnp.swapaxes(jax.lax.map(one, view_keys), 0, 1)


def lidar_score(ctx: EvalContext) -> dict[str, Metric]:
    """LiDAR (label-free): the effective rank of the linear discriminant of the representation
    of ``eval.lidar_images`` test images (each its own class) in ``eval.lidar_views``
    random resized crops each (``augment.scale``, ``augment.flip``: the crop every method's
    views share), in [1, min(D, images - 1)]."""
    e, a = ctx.config.eval, ctx.config.augment
    images = take_subset(ctx.test, e.get("lidar_images", 1000), seed=ctx.config.seed + 3)
    views = AugmentedViews(
        select=e.get("representation", "features"),
        views=e.get("lidar_views", 10),
        scale=tuple(a.get("scale", (0.08, 1.0))),
        flip=bool(a.get("flip", True)),
        seed=ctx.config.seed,
    )
    ctx.progress(f"LiDAR: {views.views} views of {len(images):,} test images")
    embeddings = ctx.predict(ctx.variables(), images, views)  # [n, q, D]
    return {"lidar": Metric(float(rank.lidar(embeddings)), "LiDAR")}


def head_logits(model, variables, x) -> jax.Array:
    """Clustering heads' logits [H, b, K] as [b, H, K] (examples first, for the Predictor)."""
    logits, _ = model.apply(variables, x, train=False)
    return jax.numpy.swapaxes(logits, 0, 1)


def cluster_heads(ctx: EvalContext) -> dict[str, Metric]:
    """Clustering scores of the heads' argmax on the test split (Hungarian matching).

    The reported head is the one with the lowest running training loss
    (``method_state["head_loss"]``, chosen without labels). In the table: its
    ACC, NMI, ARI (and many-to-one ACC when K > C); in the JSON only: its
    index, the best ACC over all heads (an oracle, for judging the head
    choice), its largest cluster's share and its empty clusters. The cluster
    histogram goes to the log, with a warning when one cluster holds more than
    ``config.<method>.max_cluster_share``; the matched confusion matrix is
    written to the workdir when there is one.
    """
    best = int(np.argmin(jax.device_get(ctx.state.method_state["head_loss"])))
    logits = ctx.predict(ctx.variables(), ctx.test, head_logits)  # [N, H, K]
    labels = np.asarray(ctx.test.labels)
    num_clusters = logits.shape[-1]
    preds = np.argmax(logits, axis=-1).astype(np.int32).T  # [H, N]
    counts = dict(num_classes=ctx.num_classes, num_clusters=num_clusters)
    accs = [float(clustering.cluster_accuracy(labels, p, **counts)) for p in preds]
    pred = preds[best]
    sizes = np.asarray(plots.cluster_sizes(pred, num_clusters=num_clusters))
    summary = plots.cluster_size_summary(sizes)
    results = {
        "head_acc": Metric(accs[best], "head ACC (Hungarian)"),
        "head_nmi": Metric(float(clustering.nmi(labels, pred, **counts)), "head NMI"),
        "head_ari": Metric(float(clustering.ari(labels, pred, **counts)), "head ARI"),
        "head_best": Metric(best),
        "head_acc_max_over_heads": Metric(max(accs)),
        "head_largest_share": Metric(summary["largest_share"]),
        "head_empty_clusters": Metric(summary["empty_clusters"]),
    }
    if num_clusters > ctx.num_classes:
        many = clustering.cluster_accuracy_many_to_one(labels, pred, **counts)
        results["head_acc_many_to_one"] = Metric(float(many), "head ACC (many-to-one)")
    logging.info("Test cluster sizes of head %d:\n%s", best, plots.histogram_text(sizes))
    block = ctx.config.get(ctx.config.method)
    max_share = block.get("max_cluster_share") if block is not None else None
    # The untrained head (step 0) has not learned anything that could have collapsed.
    if max_share is not None and summary["largest_share"] > max_share and ctx.step > 0:
        logging.warning(
            "Head %d puts %.1f%% of the test images in one cluster (> %.0f%%): collapsed.\n%s",
            best,
            100 * summary["largest_share"],
            100 * max_share,
            plots.histogram_text(sizes, max_rows=10),
        )
    if ctx.workdir and jax.process_index() == 0:  # the run folder is written by process 0
        step = ctx.step
        plots.save_confusion_matrix(
            os.path.join(ctx.workdir, f"confusion_{step}.png"),
            labels,
            pred,
            **counts,
            class_names=ctx.class_names,
            title=f"{ctx.config.method} head {best}, step {step}: ACC {accs[best]:.3f}",
        )
    return results


EVALUATORS: dict[str, Evaluator] = {
    "knn": knn,
    "linear_probe": linear_probe_top1,
    "kmeans": kmeans_clustering,
    "cluster_heads": cluster_heads,
    "teacher_knn": teacher_knn,
    "rankme": rankme_score,
    "lidar": lidar_score,
}
DEFAULT_EVALUATORS = ("knn", "linear_probe", "kmeans")


def _extra_evaluators(v) -> str | None:
    """Registered names, but not cluster_heads (it scores the clustering methods' own heads,
    and those run it already)."""
    if not isinstance(v, (tuple, list)):
        return "must be a tuple of evaluator names, e.g. \"('lidar',)\""
    addable = sorted(set(EVALUATORS) - {"cluster_heads"})
    for name in v:
        if name == "cluster_heads":
            return "'cluster_heads' scores clustering heads: the methods with heads run it already"
        if name not in EVALUATORS:
            return f"{name!r}: unknown evaluator; use one of {', '.join(map(repr, addable))}"
    return None


# The evaluation's optional config fields, checked by jssl.validation wherever a config has
# them (runs saved before they existed still reopen).
FIELDS: dict[str, Check] = {
    "eval.every_steps": integer(0, MAX_STEPS),  # evaluation during training (during.py)
    "eval.during_max_examples": integer(1),
    "eval.extra_evaluators": _extra_evaluators,
    "eval.lidar_images": integer(2),
    "eval.lidar_views": integer(2, 1000),
}


def run_evaluators(names, ctx: EvalContext) -> dict[str, Metric]:
    """The metrics of the evaluators ``names``, in order; an unknown name lists the valid ones."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise UserError(f"Unknown evaluator(s) {unknown}; valid: {', '.join(sorted(EVALUATORS))}.")
    results: dict[str, Metric] = {}
    for name in names:
        ctx.progress(name)
        results.update(EVALUATORS[name](ctx))
    return results
