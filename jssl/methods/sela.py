"""SeLa (Asano et al., 2020): self-labelling by optimal transport.

Alternates two steps over training:

- learning step (every train step, jitted): cross-entropy of each of H
  clustering heads against its current pseudo-labels, which live in
  ``state.method_state["labels"]`` ([H, N] int32, or [H, N, K] float32 for soft
  labels) and are gathered on device by ``batch["index"]``. One augmented view
  per image (the SimCLR policy of ``config.augment``).
- labelling step (``host_update``, on a schedule): the current network scores
  the whole training set (eval mode, un-augmented, jitted, batched), and for
  every head ``sinkhorn_knopp(log p, epsilon=1 / lambda)`` solves the
  equal-size assignment; soft labels are Q itself, hard labels round Q so
  that every cluster gets exactly its share (``balanced_assignment``; argmax_k
  Q with ``config.sela.balanced_labels=False``, which early in training, when
  Q is diffuse, gives clusters of 30 to 260 images where 144 are asked for).

Decisions:

- Initial labels are a random equipartition per head (the paper's start),
  and the first labelling runs right after the first update (with a warm-up
  the learning rate starts at 0, so that is the untrained network's view):
  random features already group similar images, which gives the learning
  step a better start than memorising random labels. The L label updates run
  after updates ``max(1, round(i * T / L))``, i = 0..L-1, of a T-step run.
- The labels are method state, so they are saved in every checkpoint and a
  resumed run continues with exactly the labels it had (no relabelling at
  start).
- The best head is chosen without labels: the lowest EMA of its training loss
  (``method_state["head_loss"]``); evaluation reports that head's clustering
  ACC / NMI / ARI on the test split.

This module also holds what SCAN (``jssl.methods.scan``) shares with SeLa:
the multi-head clustering model, head evaluation, collapse monitoring and the
trainer hook shim.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jssl import augment, evaluation, losses, sharding
from jssl.errors import UserError
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.methods.simclr import policy_kwargs
from jssl.models import create_model
from jssl.sinkhorn import balanced_assignment, sinkhorn_knopp

# ----------------------------------------------------------------------------- shared model


class ClusterHeads(nn.Module):
    """H linear clustering heads on the same features: [B, D] -> logits [H, B, K] float32.

    Parameters ``kernel`` [H, D, K] and ``bias`` [H, K], so one head is a slice.
    """

    num_heads: int
    num_clusters: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        kernel = self.param("kernel", init, (self.num_heads, h.shape[-1], self.num_clusters))
        bias = self.param("bias", nn.initializers.zeros, (self.num_heads, self.num_clusters))
        logits = jnp.einsum("bd,hdk->hbk", h.astype(self.dtype), kernel.astype(self.dtype))
        return logits.astype(jnp.float32) + bias[:, None, :]


def build_clustering_model(
    config: ml_collections.ConfigDict, *, num_heads: int, num_clusters: int
) -> EncoderWithHead:
    """backbone -> ClusterHeads; params {"backbone": ..., "head": {"kernel", "bias"}}."""
    if num_heads < 1 or num_clusters < 2:
        raise UserError(
            f"Clustering needs num_heads >= 1 and num_clusters >= 2, got {num_heads} and "
            f"{num_clusters}."
        )
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    return EncoderWithHead(
        backbone=backbone, head=ClusterHeads(num_heads, num_clusters, dtype=dtype)
    )


def one_view(key: jax.Array, images: jax.Array, **policy) -> jax.Array:
    """One SimCLR-policy view per image: [B, H, W, C] -> [B, h, w, C], keys split per example."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(augment.simclr_view, **policy))(keys, images)


# ----------------------------------------------------------------------------- shared state


def update_head_loss(method_state: dict, per_head: jax.Array, step, momentum: float) -> dict:
    """EMA of each head's loss ([H]), started at the first step's value; picks the best head."""
    per_head = jax.lax.stop_gradient(per_head)
    old = method_state["head_loss"]
    new = jnp.where(step == 0, per_head, momentum * old + (1.0 - momentum) * per_head)
    return {**method_state, "head_loss": new}


def head_metrics(logits: jax.Array, per_head: jax.Array) -> dict[str, jax.Array]:
    """Cheap per-step health numbers of H heads' logits [H, B, K] with per-head losses [H]."""
    shares = losses.largest_cluster_share(logits)  # [H]
    best = jnp.argmin(per_head)
    return {
        "head_loss_min": jnp.min(per_head),
        "head_loss_max": jnp.max(per_head),
        # Of the head with the lowest loss on this batch; the worst head as well.
        "largest_cluster_share": shares[best],
        "largest_cluster_share_max": jnp.max(shares),
    }


def make_collapse_warnings(block: str):
    """collapse_warnings reading ``config.<block>.max_cluster_share``."""

    def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
        limit = config[block].max_cluster_share
        share = metrics.get("largest_cluster_share", 0.0)
        if share > limit:
            return [
                f"the largest cluster holds {share:.1%} of the batch (> {limit:.0%}, "
                f"config.{block}.max_cluster_share): the clustering is collapsing onto few "
                "clusters"
            ]
        return []

    return collapse_warnings


# ----------------------------------------------------------------------------- trainer hooks


def host_step(exp, state, name: str) -> int:
    """The step of ``state`` in a host_update called once after every update.

    Reads ``state.step`` (a device sync) only on the first call of an
    Experiment and counts on the host afterwards, so host_update does not
    stall the asynchronous dispatch of the next step. Callers re-check the
    real step before acting on it.
    """
    attr = f"_{name}_host_step"
    step = getattr(exp, attr, None)
    step = int(jax.device_get(state.step)) if step is None else step + 1
    setattr(exp, attr, step)
    return step


def resync_host_step(exp, state, name: str) -> int:
    step = int(jax.device_get(state.step))
    setattr(exp, f"_{name}_host_step", step)
    return step


# ----------------------------------------------------------------------------- evaluation


def logits_fn(exp, state):
    """Jitted eval-mode heads: uint8 images [b, H, W, C] -> logits [b, heads * K] float32."""
    size = (exp.config.augment.crop_size, exp.config.augment.crop_size)
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    fn = getattr(exp, "_cluster_logits_jit", None)
    if fn is None:

        @jax.jit
        def fn(variables, images):
            logits, _ = exp.model.apply(
                variables, augment.eval_view(images, size=size), train=False
            )
            return jnp.transpose(logits, (1, 0, 2)).reshape(images.shape[0], -1)

        exp._cluster_logits_jit = fn
    data_sharding = sharding.data_sharded(exp.mesh)
    return lambda images: fn(variables, jax.device_put(images, data_sharding))


def dataset_logits(exp, state, images: np.ndarray, num_heads: int) -> np.ndarray:
    """Eval-mode logits of every image: [N, H, W, C] -> [heads, N, K] float32 numpy."""
    batch_size = exp.config.eval.batch_size
    sharding.check_batch_size(batch_size, exp.mesh)
    flat = evaluation.extract_features(logits_fn(exp, state), images, batch_size=batch_size)
    return np.transpose(flat.reshape(len(images), num_heads, -1), (1, 0, 2))


def evaluate_heads(
    exp, state, *, num_heads: int, best_head: int, max_share: float | None = None, prefix="head"
) -> dict:
    """Clustering scores of the heads' argmax on the test split (Hungarian matching).

    Returns ``{prefix}_acc``, ``_nmi``, ``_ari`` of ``best_head`` (chosen
    without labels), ``_acc_many_to_one`` when K > C, ``_best`` (its index),
    ``_acc_max_over_heads`` (an oracle, for judging the head choice only),
    ``_largest_share`` and ``_empty_clusters`` of the test predictions (the
    histogram goes to the log, with a warning when the largest cluster holds
    more than ``max_share``). Writes the matched confusion matrix PNG to
    ``exp.workdir`` when it is known.
    """
    test = exp.dataset.test
    num_classes = exp.dataset.num_classes
    logits = dataset_logits(exp, state, test.images, num_heads)  # [H, N, K]
    num_clusters = logits.shape[-1]
    preds = np.argmax(logits, axis=-1).astype(np.int32)
    counts = dict(num_classes=num_classes, num_clusters=num_clusters)
    accs = [float(evaluation.cluster_accuracy(test.labels, p, **counts)) for p in preds]
    pred = preds[best_head]
    sizes = np.asarray(evaluation.cluster_sizes(pred, num_clusters=num_clusters))
    summary = evaluation.cluster_size_summary(sizes)
    results = {
        f"{prefix}_acc": accs[best_head],
        f"{prefix}_nmi": float(evaluation.nmi(test.labels, pred, **counts)),
        f"{prefix}_ari": float(evaluation.ari(test.labels, pred, **counts)),
        f"{prefix}_best": int(best_head),
        f"{prefix}_acc_max_over_heads": max(accs),
        f"{prefix}_largest_share": summary["largest_share"],
        f"{prefix}_empty_clusters": summary["empty_clusters"],
    }
    if num_clusters > num_classes:
        results[f"{prefix}_acc_many_to_one"] = float(
            evaluation.cluster_accuracy_many_to_one(test.labels, pred, **counts)
        )
    logging.info("Test cluster sizes of head %d:\n%s", best_head, evaluation.histogram_text(sizes))
    if max_share is not None and summary["largest_share"] > max_share:
        logging.warning(
            "Head %d puts %.1f%% of the test images in one cluster (> %.0f%%): collapsed.\n%s",
            best_head,
            100 * summary["largest_share"],
            100 * max_share,
            evaluation.histogram_text(sizes, max_rows=10),
        )
    workdir = exp.workdir
    if workdir:
        step = int(jax.device_get(state.step))
        path = os.path.join(workdir, f"confusion_{step}.png")
        evaluation.save_confusion_matrix(
            path,
            test.labels,
            pred,
            **counts,
            class_names=exp.dataset.class_names,
            title=f"{exp.config.method} head {best_head}, step {step}: ACC {accs[best_head]:.3f}",
        )
    return results


# ----------------------------------------------------------------------------- SeLa


def label_update_steps(total_steps: int, num_updates: int, power: float = 1.0) -> tuple[int, ...]:
    """Steps (updates applied) after which the labels are recomputed.

    Update i of L comes after max(1, round(T (i / L)^power)) updates of a T-step
    run: evenly spread for power 1 (SeLa), denser early for power > 1, while
    the features and the labels change fastest. Coinciding steps merge.
    """
    if num_updates < 1:
        raise UserError(f"config.sela.num_label_updates must be >= 1, got {num_updates}.")
    if power <= 0:
        raise UserError(f"config.sela.label_schedule_power must be > 0, got {power}.")
    steps = {
        max(1, int(round(total_steps * (i / num_updates) ** power))) for i in range(num_updates)
    }
    return tuple(sorted(s for s in steps if s <= total_steps))


def _check_config(config: ml_collections.ConfigDict) -> None:
    s = config.sela
    if s.label_mode not in ("hard", "soft"):
        raise UserError(f"config.sela.label_mode must be 'hard' or 'soft', got {s.label_mode!r}.")
    if s.lam <= 0:
        raise UserError(f"config.sela.lam (lambda = 1 / epsilon) must be > 0, got {s.lam}.")
    if s.class_weights and len(s.class_weights) != s.num_clusters:
        raise UserError(
            f"config.sela.class_weights has {len(s.class_weights)} entries but "
            f"num_clusters={s.num_clusters}; give one weight per cluster or () for uniform."
        )


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    _check_config(config)
    return build_clustering_model(
        config, num_heads=config.sela.num_heads, num_clusters=config.sela.num_clusters
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    return one_view(key, batch["image"], **policy_kwargs(config)), batch["index"]


def init_method_state(params, config: ml_collections.ConfigDict) -> dict:
    # The labels ([H, N]) are added by post_init: N is not known inside the jitted init.
    return {
        "head_loss": jnp.zeros((config.sela.num_heads,), jnp.float32),
        "label_updates": jnp.zeros((), jnp.int32),
    }


def initial_labels(num_examples: int, config: ml_collections.ConfigDict) -> np.ndarray:
    """A random equipartition per head (SeLa's start): [H, N] int32, or one-hot [H, N, K]."""
    s = config.sela
    rng = np.random.default_rng((config.seed, 0x5E1A))
    base = np.arange(num_examples) % s.num_clusters
    labels = np.stack([rng.permutation(base) for _ in range(s.num_heads)]).astype(np.int32)
    if s.label_mode == "soft":
        return np.eye(s.num_clusters, dtype=np.float32)[labels]
    return labels


def post_init(exp, state):
    labels = initial_labels(len(exp.dataset.train.labels), exp.config)
    labels = jax.device_put(labels, sharding.replicated(exp.mesh))
    return state.replace(method_state={**state.method_state, "labels": labels})


def make_loss(model, config: ml_collections.ConfigDict):
    momentum = config.sela.head_loss_momentum

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x, index = views
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)  # [H, B, K]
        targets = jnp.take(method_state["labels"], index, axis=1)  # [H, B] or [H, B, K]
        per_head = losses.pseudo_label_cross_entropy(logits, targets)  # [H]
        method_state = update_head_loss(method_state, per_head, step, momentum)
        hard = targets if targets.ndim == 2 else jnp.argmax(targets, axis=-1)
        agreement = jnp.mean(jnp.argmax(logits, axis=-1) == hard, axis=-1)  # [H]
        metrics = {
            **head_metrics(logits, per_head),
            "label_agreement": agreement[jnp.argmin(per_head)],
            "label_updates": method_state["label_updates"].astype(jnp.float32),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return jnp.mean(per_head), (batch_stats, method_state, metrics)

    return loss_fn


def _relabel_fn(exp):
    """Jitted [H, N, K] logits -> new labels, one Sinkhorn per head (lax.map bounds memory)."""
    fn = getattr(exp, "_sela_relabel_jit", None)
    if fn is not None:
        return fn
    s = exp.config.sela
    weights = np.asarray(s.class_weights, np.float32) if s.class_weights else None

    def relabel(logits):
        def one_head(head_logits):
            q = sinkhorn_knopp(
                jax.nn.log_softmax(head_logits, axis=-1),
                epsilon=1.0 / s.lam,
                num_iters=s.sinkhorn_iters,
                class_weights=weights,
                tol=s.sinkhorn_tol or None,
            )
            if s.label_mode == "soft":
                return q
            if s.balanced_labels:
                return balanced_assignment(q, class_weights=weights)
            return jnp.argmax(q, axis=-1).astype(jnp.int32)

        return jax.lax.map(one_head, logits)

    n, devices = len(exp.dataset.train.labels), exp.mesh.devices.size
    # Rows sharded over the mesh when they split evenly (Sinkhorn's column sums
    # become all-reduces); otherwise every device solves the whole problem.
    rows = (
        jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec(None, "data"))
        if n % devices == 0
        else sharding.replicated(exp.mesh)
    )
    fn = jax.jit(relabel, in_shardings=rows, out_shardings=sharding.replicated(exp.mesh))
    exp._sela_relabel_jit = fn
    return fn


def relabel(exp, state):
    """SeLa's labelling step: Sinkhorn on log p of the whole training set, per head."""
    s = exp.config.sela
    logits = dataset_logits(exp, state, exp.dataset.train.images, s.num_heads)
    labels = _relabel_fn(exp)(logits)
    ms = state.method_state
    return state.replace(
        method_state={**ms, "labels": labels, "label_updates": ms["label_updates"] + 1}
    )


def host_update(exp, state):
    due = getattr(exp, "_sela_update_steps", None)
    if due is None:
        due = exp._sela_update_steps = frozenset(
            label_update_steps(
                exp.total_steps,
                exp.config.sela.num_label_updates,
                exp.config.sela.label_schedule_power,
            )
        )
    if host_step(exp, state, "sela") in due and resync_host_step(exp, state, "sela") in due:
        state = relabel(exp, state)
    return state


def extra_eval(exp, state) -> dict:
    best = int(np.argmin(jax.device_get(state.method_state["head_loss"])))
    s = exp.config.sela
    return evaluate_heads(
        exp, state, num_heads=s.num_heads, best_head=best, max_share=s.max_cluster_share
    )


def prepare(exp) -> None:
    s = exp.config.sela
    n = len(exp.dataset.train.labels)
    if s.num_clusters > n:
        raise UserError(f"config.sela.num_clusters={s.num_clusters} exceeds the {n} examples.")
    if s.num_clusters < exp.dataset.num_classes:
        logging.warning(
            "SeLa with %d clusters for %d classes: ACC cannot reach 1.",
            s.num_clusters,
            exp.dataset.num_classes,
        )


SELA = Method(
    name="sela",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    prepare=prepare,
    post_init=post_init,
    host_update=host_update,
    collapse_warnings=make_collapse_warnings("sela"),
    extra_eval=extra_eval,
)
