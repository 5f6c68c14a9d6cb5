"""What the clustering methods (SeLa, SCAN, self-labelling) share.

The multi-head clustering model (backbone -> H linear heads), one augmented
view per image, the running per-head loss that picks the best head without
labels (``method_state["head_loss"]``; evaluated by the ``cluster_heads``
evaluator), cheap per-step head metrics and the largest-cluster collapse alarm.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from jssl import augment, losses
from jssl.errors import UserError
from jssl.methods.base import EncoderWithHead
from jssl.models import ClusterHeads, create_model

EVALUATORS = ("knn", "linear_probe", "kmeans", "cluster_heads")


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
