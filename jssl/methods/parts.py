"""What several methods share, in one place: no method module imports another method module.

- the backbone a config names, and the decoder of the reconstruction methods;
- views: the SimCLR policy and its pair, BYOL's asymmetric pair, multi-crop, the
  crop reshapes of the multi-crop methods, one view for the clustering methods;
- the momentum encoder: an EMA of the online network's ``{"backbone", "head"}``
  subtrees, its momentum schedule, and its forward pass without the predictor;
- queues of past embeddings (MoCo v2, NNCLR, SwAV);
- the collapse monitors;
- the clustering methods' heads, running head losses and collapse alarm (SeLa, SCAN,
  self-labelling);
- the config fields these parts read, with their checks (``Method.fields`` of the
  methods that use them).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import augment, ema, losses, pretext, schedules
from jssl.checks import (
    MAX_WIDTH,
    MOMENTUM,
    PROBABILITY,
    SIZE,
    WIDTH,
    boolean,
    integer,
    jitter,
    numbers,
    one_of,
    pair,
    real,
)
from jssl.errors import UserError
from jssl.methods.base import RunInfo, apply_train
from jssl.models import ClusterHeads, Decoder, EncoderWithHead, MLPHead, create_model
from jssl.models.decoders import UPSAMPLING

# ----------------------------------------------------------------------------- config fields

# The augment fields each view family reads.
CROP_FLIP_FIELDS = {"augment.crop_size": SIZE, "augment.scale": pair(), "augment.flip": boolean}
SIMCLR_VIEW_FIELDS = {
    **CROP_FLIP_FIELDS,
    "augment.strength": real(0.0, 2.5),  # hue jitter 0.2 * strength must stay <= 0.5
    "augment.jitter_p": PROBABILITY,
    "augment.gray_p": PROBABILITY,
    "augment.blur_p": PROBABILITY,
}
ASYMMETRIC_VIEW_FIELDS = {
    **CROP_FLIP_FIELDS,
    "augment.jitter": jitter,
    "augment.jitter_p": PROBABILITY,
    "augment.gray_p": PROBABILITY,
    "augment.global_blur_p": numbers(PROBABILITY, min_length=1),
    "augment.global_solarize_p": numbers(PROBABILITY, min_length=1),
    "augment.blur_sigma": pair(0.0, 100.0),
}
MULTI_CROP_FIELDS = {
    **ASYMMETRIC_VIEW_FIELDS,
    "augment.num_global_crops": integer(1, 64),
    "augment.num_local_crops": integer(0, 64),
    "augment.local_crop_size": SIZE,
    "augment.local_scale": pair(),
    "augment.local_blur_p": PROBABILITY,
}
# SimCLR's projection head and loss (``config.simclr``: SimCLR and equivariance).
SIMCLR_FIELDS = {
    "simclr.temperature": real(0.0, lo_open=True),
    "simclr.proj_dim": WIDTH,
    "simclr.proj_hidden_dims": numbers(WIDTH),
    "simclr.proj_use_bn": boolean,
}
DECODER_FIELDS = {
    "decoder.upsample": one_of(tuple(UPSAMPLING), "decoder.upsample"),
    "decoder.widths": numbers(WIDTH),
    "decoder.min_width": WIDTH,
    "decoder.use_bn": boolean,
}


def projection_fields(block: str, *, predictor: bool = False) -> dict:
    """``<block>.proj_dim`` and ``proj_hidden_dims`` (and ``pred_hidden_dims``)."""
    out = {f"{block}.proj_dim": WIDTH, f"{block}.proj_hidden_dims": numbers(WIDTH)}
    return {**out, f"{block}.pred_hidden_dims": numbers(WIDTH)} if predictor else out


def clustering_fields(block: str) -> dict:
    """The fields every clustering method's block has."""
    return {
        f"{block}.num_clusters": integer(2, MAX_WIDTH),
        f"{block}.head_loss_momentum": MOMENTUM,
        f"{block}.max_cluster_share": real(0.0, 1.0, lo_open=True),
    }


def multi_crop_problems(values: dict, who: str) -> list[str]:
    """A multi-crop method compares pairs of different crops: at least 2 in all."""
    g, n_local = values.get("augment.num_global_crops"), values.get("augment.num_local_crops")
    if g is not None and n_local is not None and g + n_local < 2:
        return [
            f"augment.num_global_crops={g}: {who} compares pairs of different crops "
            f"and num_local_crops={n_local}; use at least 2 crops in all"
        ]
    return []


def queue_problems(values: dict, block: str, *, optional: bool = False) -> list[str]:
    """A queue takes the whole global batch every step: Q >= B (``optional``: 0 is none)."""
    queue, batch = values.get(f"{block}.queue_size"), values.get("batch_size")
    if queue and batch is not None and queue < batch:
        return [
            f"{block}.queue_size={queue}: smaller than batch_size={batch}, and the "
            f"queue takes the whole global batch every step; use at least {batch} (a "
            "multiple keeps the FIFO aligned)" + (", or 0 for no queue" if optional else "")
        ]
    return []


# ----------------------------------------------------------------------------- networks


def backbone(config: ml_collections.ConfigDict) -> nn.Module:
    """The backbone ``config.model`` names, in ``config.model.dtype``."""
    return create_model(
        config.model.name, dtype=jnp.dtype(config.model.dtype), **config.model.kwargs
    )


def projection_network(
    config: ml_collections.ConfigDict,
    block: ml_collections.ConfigDict,
    *,
    predictor: dict | None = None,
    **head_options,
) -> EncoderWithHead:
    """backbone -> ``MLPHead(block.proj_hidden_dims, block.proj_dim, **head_options)`` ->
    with ``predictor`` (its options), ``MLPHead(block.pred_hidden_dims, block.proj_dim)``."""
    dtype = jnp.dtype(config.model.dtype)
    head = MLPHead(tuple(block.proj_hidden_dims), block.proj_dim, dtype=dtype, **head_options)
    if predictor is not None:
        predictor = MLPHead(tuple(block.pred_hidden_dims), block.proj_dim, dtype=dtype, **predictor)
    return EncoderWithHead(backbone=backbone(config), head=head, predictor=predictor)


def output_bn_network(config: ml_collections.ConfigDict, block) -> EncoderWithHead:
    """MoCo v3's and NNCLR's network: projector and predictor ending in a BatchNorm without
    shift when ``block.last_bn`` / ``block.pred_last_bn`` (its scale: ``last_bn_scale``)."""
    scale = block.last_bn_scale
    predictor = dict(out_bn=block.pred_last_bn, out_bn_scale=scale)
    return projection_network(
        config, block, predictor=predictor, out_bn=block.last_bn, out_bn_scale=scale
    )


def output_bn_renames(block) -> dict[str, str]:
    """``output_bn_network``'s variable paths before the projection MLPs were merged (the
    projector named ``projector``, an output BatchNorm auto-named ``BatchNorm_<n>`` after
    the n hidden layers' BNs) -> today's."""
    out = {"projector": "head"}
    for old, new, hidden, on in (
        ("projector", "head", block.proj_hidden_dims, block.last_bn),
        ("predictor", "predictor", block.pred_hidden_dims, block.pred_last_bn),
    ):
        if on:
            out[f"{old}/BatchNorm_{len(hidden)}"] = f"{new}/output_bn"
    return out


def build_decoder(config: ml_collections.ConfigDict) -> Decoder:
    """The reconstruction methods' decoder from ``config.decoder``."""
    d = config.decoder
    return Decoder(
        widths=tuple(d.widths),
        min_width=d.min_width,
        upsample=d.upsample,
        use_bn=d.use_bn,
        dtype=jnp.dtype(config.model.dtype),
    )


# ----------------------------------------------------------------------------- views


def simclr_policy(config: ml_collections.ConfigDict) -> dict:
    """``augment.simclr_view``'s arguments from ``config.augment``."""
    a = config.augment
    return dict(
        size=(a.crop_size, a.crop_size),
        scale=tuple(a.scale),
        strength=a.strength,
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_p=a.blur_p,
        flip=a.flip,
    )


def two_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(v1, v2), each float32 [B, h, w, C]: two views with the SimCLR policy."""
    return augment.two_views(key, batch["image"], **simclr_policy(config))


def one_view(key: jax.Array, images: jax.Array, **policy) -> jax.Array:
    """One SimCLR-policy view per image: [B, H, W, C] -> [B, h, w, C], keys split per example."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(augment.simclr_view, **policy))(keys, images)


def clean_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> jax.Array:
    """Crop/flip views [B, S, S, C] float32 in [0, 1] of the batch's images."""
    a = config.augment
    return pretext.crop_flip_views(
        key, batch["image"], size=a.crop_size, scale=tuple(a.scale), flip=a.flip
    )


def multi_crop_kwargs(config: ml_collections.ConfigDict) -> dict:
    """``augment.multi_crop``'s arguments from ``config.augment``."""
    a = config.augment
    return dict(
        global_size=(a.crop_size, a.crop_size),
        local_size=(a.local_crop_size, a.local_crop_size),
        num_global=a.num_global_crops,
        num_local=a.num_local_crops,
        global_scale=tuple(a.scale),
        local_scale=tuple(a.local_scale),
        global_blur_p=tuple(a.global_blur_p),
        global_solarize_p=tuple(a.global_solarize_p),
        local_blur_p=a.local_blur_p,
        local_solarize_p=a.get("local_solarize_p", 0.0),  # a field of LeJEPA's only
        flip=a.flip,
        jitter=tuple(a.jitter),
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_sigma=tuple(a.blur_sigma),
    )


def multi_crop_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> dict:
    """{"global": [B, G, g, g, C], "local": [B, L, l, l, C] (absent when L = 0)}."""
    globals_, locals_ = augment.multi_crop(key, batch["image"], **multi_crop_kwargs(config))
    return {"global": globals_} if locals_ is None else {"global": globals_, "local": locals_}


def asymmetric_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(v1, v2), each float32 [B, h, w, C]: BYOL's two differently augmented views.

    ``augment.multi_crop`` with two global crops and no local one: view i uses
    ``augment.global_blur_p[i]`` and ``augment.global_solarize_p[i]`` (the last entry
    repeats). The local-crop fields are not read.
    """
    a = config.augment
    size = (a.crop_size, a.crop_size)
    crops, _ = augment.multi_crop(
        key,
        batch["image"],
        global_size=size,
        local_size=size,
        num_global=2,
        num_local=0,
        global_scale=tuple(a.scale),
        global_blur_p=tuple(a.global_blur_p),
        global_solarize_p=tuple(a.global_solarize_p),
        flip=a.flip,
        jitter=tuple(a.jitter),
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_sigma=tuple(a.blur_sigma),
    )
    return crops[:, 0], crops[:, 1]


def crop_groups(views: dict) -> tuple[jax.Array, ...]:
    """The multi-crop views as the network's crop groups: (globals [B * G, ...], locals
    [B * L, ...] when there are any), batch-major (``EncoderWithHead``, ``PrototypeNet``)."""
    groups = (flatten_crops(views["global"]),)
    return groups + (flatten_crops(views["local"]),) if "local" in views else groups


def per_crop(out: jax.Array, views: dict) -> jax.Array:
    """The network's outputs on ``crop_groups(views)`` as [G + L, B, ...], globals first."""
    b, num_global = views["global"].shape[:2]
    n_g = b * num_global
    crops = [crops_first(out[:n_g], b)]
    if "local" in views:
        crops.append(crops_first(out[n_g:], b))
    return jnp.concatenate(crops, axis=0)


def flatten_crops(x: jax.Array) -> jax.Array:
    """[B, n, h, w, C] -> [B * n, h, w, C], batch-major so the data sharding is kept."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def crops_first(z: jax.Array, batch: int) -> jax.Array:
    """[B * n, ...] (batch-major) -> [n, B, ...]."""
    return jnp.swapaxes(z.reshape(batch, -1, *z.shape[1:]), 0, 1)


# ----------------------------------------------------------------------------- momentum encoder

ENCODER = ("backbone", "head")  # the momentum encoder's subtrees of the online network


def encoder_parts(tree) -> dict:
    """The momentum encoder's subtrees of a params / batch_stats tree ({} stays {})."""
    return {name: tree[name] for name in ENCODER if tree and name in tree}


def momentum_schedule(base: float, final: float, run: RunInfo) -> optax.Schedule:
    """Momentum ``base`` -> ``final`` on a cosine over the run (constant when equal)."""
    if base == final:
        return lambda count: jnp.float32(base)
    return schedules.bind(
        schedules.teacher_momentum, total_steps=run.total_steps, base=base, final=final
    )


def init_momentum_encoder(params, batch_stats, momentum: float) -> ema.EmaTeacherState:
    """The momentum encoder: a copy of the online backbone and head (params, BN statistics)."""
    return ema.ema_teacher(momentum).init(encoder_parts(params), encoder_parts(batch_stats))


def update_momentum_encoder(
    params, batch_stats, encoder: ema.EmaTeacherState, momentum: optax.Schedule
) -> ema.EmaTeacherState:
    """EMA of the updated online backbone and head into the momentum encoder."""
    stats = encoder_parts(batch_stats) if batch_stats else None
    return ema.ema_teacher(momentum).update(encoder_parts(params), encoder, stats)


def apply_momentum_encoder(
    model: EncoderWithHead, encoder: ema.EmaTeacherState, x: jax.Array
) -> jax.Array:
    """The momentum encoder's head output [B, D] on x, without gradient.

    Training mode, as the authors' key encoders: batch statistics are used and the
    updated running statistics dropped.
    """
    encoder = jax.lax.stop_gradient(encoder)
    z, _, _ = apply_train(
        model, encoder.params, encoder.batch_stats, x, method=EncoderWithHead.project
    )
    return jax.lax.stop_gradient(z)


# ----------------------------------------------------------------------------- queues


def random_queue(seed: int, salt: int, shape: tuple[int, ...]) -> jax.Array:
    """[..., Q, D] float32 rows of random unit vectors, a function of (seed, salt)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), salt)
    return losses.l2_normalize(jax.random.normal(key, shape, jnp.float32))


def enqueue(queue: jax.Array, ptr: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FIFO write of ``rows`` [..., B, D] into ``queue`` [..., Q, D] at the pointer.

    Row b goes to queue row (ptr + b) mod Q, so the write wraps around the end;
    returns (new queue, (ptr + B) mod Q). Needs B <= Q (a batch never
    overwrites itself). ``rows`` are taken without gradient.
    """
    b, q = rows.shape[-2], queue.shape[-2]
    if b > q:
        raise ValueError(f"cannot enqueue {b} rows into a queue of {q}: the queue must hold B")
    idx = (ptr + jnp.arange(b, dtype=jnp.int32)) % q
    rows = jax.lax.stop_gradient(rows).astype(queue.dtype)
    new = queue.at[..., idx, :].set(rows, unique_indices=True, indices_are_sorted=False)
    return new, jnp.asarray((ptr + b) % q, jnp.int32)


def check_queue(name: str, queue_size: int, batch_size: int) -> None:
    """A queue of Q rows must hold the global batch B (Q >= B)."""
    if queue_size < batch_size:
        raise UserError(
            f"config.{name}.queue_size={queue_size} is smaller than the global batch "
            f"batch_size={batch_size}; the queue receives a whole batch every step: use a "
            f"queue of at least {batch_size} rows (a multiple of it keeps the FIFO aligned)."
        )


# ----------------------------------------------------------------------------- collapse monitors


def std_floor(dim: int) -> float:
    """0.1 / sqrt(D): a tenth of the per-dimension std of well-spread L2-normalised embeddings."""
    return 0.1 / dim**0.5


def std_metrics(z: jax.Array, h: jax.Array) -> dict[str, jax.Array]:
    """The embedding-std monitor of z [N, D] (mean and smallest per-dimension std of the
    L2-normalised z) and of the backbone features h."""
    stds = jnp.std(losses.l2_normalize(z.astype(jnp.float32)), axis=0)
    return {
        "z_std": jnp.mean(stds),
        "z_std_min": jnp.min(stds),
        "h_std": losses.embedding_std(h),
    }


def std_warnings(metrics: dict, names_and_dims: dict[str, int]) -> list[str]:
    """A warning for each logged embedding std (``losses.embedding_std``) below its floor."""
    out = []
    for name, dim in names_and_dims.items():
        value, floor = metrics.get(name), std_floor(dim)
        if value is not None and value < floor:
            out.append(
                f"{name} {value:.2e} < {floor:.2e} (0.1 / sqrt({dim})): the embeddings are "
                "collapsing to a constant"
            )
    return out


# ----------------------------------------------------------------------------- clustering heads

CLUSTERING_EVALUATORS = ("knn", "linear_probe", "kmeans", "cluster_heads")


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
    return EncoderWithHead(
        backbone=backbone(config), head=ClusterHeads(num_heads, num_clusters, dtype=dtype)
    )


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


def cluster_collapse_warnings(block: str):
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
