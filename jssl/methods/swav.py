"""SwAV (Caron et al., 2020): swapped prediction of Sinkhorn codes over learned prototypes.

- network: backbone -> projector (Linear-BN-ReLU-Linear, hidden 2048, output
  128) -> L2 normalise -> K prototypes, a bias-free linear layer
  (``jssl.models.PrototypeNet``; scores = z . c_k);
- prototypes: unit-norm columns at initialisation and L2-normalised again
  after every update inside the step (``after_update``), as SwAV normalises
  them at every iteration; the prototypes are frozen (exactly zero gradient: their
  leaves behind ``stop_gradient`` under the traced condition step < F) for the
  first F = ``swav.freeze_prototypes_epochs`` epochs;
- views: multi-crop (``augment.multi_crop`` as DINO): G global and L local
  crops. The backbone runs on the globals and on the locals as two batches
  (two resolutions), the projector on all crops at once (SwAV's forward);
- codes: ``losses.swav_codes`` (Sinkhorn-Knopp, epsilon 0.05, 3 iterations,
  equipartition over the global batch) of each global crop's scores, no
  gradient; loss: ``losses.swav_loss`` (every crop predicts the codes of the
  other global crops, temperature 0.1);
- optional queue (``swav.queue_size`` Q > 0): ``method_state["queue"]`` [G, Q, D]
  of past embeddings z of each global crop, zeros at first, filled FIFO from
  step ``swav.queue_start_epochs`` on (the global batch written at rows
  ptr .. ptr + B - 1 mod Q, inside the jitted step) and, once Q rows have been
  written (``queue_rows``), scored against the current prototypes and put in
  front of the batch's scores for Sinkhorn (codes over Q + B rows, the batch's
  last B kept), as SwAV's main_swav.py does.

Collapse monitor: ``code_entropy`` (mean entropy of each example's code; at
ln K the codes are uniform, the prototypes no longer tell images apart) and
the loss near ln K (the predictions are uniform), warned at every log.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import EPOCHS, MAX_WIDTH, POSITIVE, integer
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import MLPHead, PrototypeNet

_HIGHEST = jax.lax.Precision.HIGHEST

# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> PrototypeNet:
    s = config.swav
    if s.queue_size:
        parts.check_queue("swav", s.queue_size, config.batch_size)
    dtype = jnp.dtype(config.model.dtype)
    projector = MLPHead(hidden_dims=tuple(s.proj_hidden_dims), out_dim=s.proj_dim, dtype=dtype)
    return PrototypeNet(
        backbone=parts.backbone(config), projector=projector, num_prototypes=s.num_prototypes
    )


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """{} without a queue; else a zero queue [G, Q, D], its pointer and the rows written."""
    s = config.swav
    if not s.queue_size:
        return {}
    shape = (config.augment.num_global_crops, s.queue_size, s.proj_dim)
    return {
        "queue": jnp.zeros(shape, jnp.float32),
        "queue_ptr": jnp.zeros((), jnp.int32),
        "queue_rows": jnp.zeros((), jnp.int32),
    }


def normalize_prototypes(kernel: jax.Array) -> jax.Array:
    """Each prototype (column of the [D, K] kernel) to unit L2 norm."""
    return losses.l2_normalize(kernel, axis=0)


def freeze_prototypes(params, frozen: jax.Array):
    """The prototypes behind ``stop_gradient`` where ``frozen`` (a traced bool): their
    gradient is exactly zero while frozen (``jssl.methods.dino.freeze_last_layer``'s way)."""
    protos = jax.tree.map(
        lambda p: jnp.where(frozen, jax.lax.stop_gradient(p), p), params["prototypes"]
    )
    return {**params, "prototypes": protos}


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """The prototypes back to unit-norm columns after every update, as SwAV does."""
    protos = params["prototypes"]
    protos = {**protos, "kernel": normalize_prototypes(protos["kernel"])}
    return {**params, "prototypes": protos}, method_state


# ----------------------------------------------------------------------------- loss


def _entropy(p: jax.Array) -> jax.Array:
    return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-12)), axis=-1)


def _swap_top1(scores: jax.Array, codes: jax.Array) -> jax.Array:
    """How often a crop's best prototype is the best of another global crop's code (the
    swapped prediction as a classification; chance 1/K), over the loss's (t, v != t) pairs."""
    predicted = jnp.argmax(scores, axis=-1)  # [C, B]
    target = jnp.argmax(codes, axis=-1)  # [T, B]
    hits = (predicted[None, :, :] == target[:, None, :]).astype(jnp.float32)  # [T, C, B]
    pairs = jnp.arange(scores.shape[0])[None, :] != jnp.arange(codes.shape[0])[:, None]
    return jnp.sum(jnp.mean(hits, axis=-1) * pairs) / jnp.sum(pairs)


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    s = config.swav
    freeze_steps = run.epochs_to_steps(s.freeze_prototypes_epochs)
    queue_start = run.epochs_to_steps(s.queue_start_epochs)
    codes_of = lambda scores: losses.swav_codes(
        scores, epsilon=s.epsilon, num_iters=s.sinkhorn_iters
    )

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del key  # all randomness is in the views
        if freeze_steps > 0:
            params = freeze_prototypes(params, step < freeze_steps)
        b, num_global = views["global"].shape[:2]
        scores, aux, batch_stats = apply_train(model, params, batch_stats, parts.crop_groups(views))
        crops = parts.per_crop(scores, views)  # [C, B, K], globals first
        s_global = crops[:num_global]  # [G, B, K]
        n_g = b * num_global

        codes = codes_of(s_global)
        new_state, metrics = method_state, {}
        if s.queue_size:
            queue = method_state["queue"]
            kernel = jax.lax.stop_gradient(params["prototypes"]["kernel"])
            queue_scores = jnp.einsum("tqd,dk->tqk", queue, kernel, precision=_HIGHEST)
            with_queue = codes_of(jnp.concatenate([queue_scores, s_global], axis=1))
            full = method_state["queue_rows"] >= s.queue_size
            codes = jnp.where(full, with_queue[:, s.queue_size :], codes)
            # Enqueue this batch's embeddings of the global crops from queue_start on.
            z_global = parts.crops_first(jax.lax.stop_gradient(aux["embedding"][:n_g]), b)
            filled, ptr = parts.enqueue(queue, method_state["queue_ptr"], z_global)
            on = step >= queue_start
            new_state = {
                "queue": jnp.where(on, filled, queue),
                "queue_ptr": jnp.where(on, ptr, method_state["queue_ptr"]),
                "queue_rows": jnp.where(
                    on,
                    jnp.minimum(method_state["queue_rows"] + b, s.queue_size),
                    method_state["queue_rows"],
                ).astype(jnp.int32),
            }
            metrics["queue_used"] = full.astype(jnp.float32)

        loss = losses.swav_loss(crops, codes, temperature=s.temperature)
        metrics.update(
            {
                "code_entropy": jnp.mean(_entropy(codes)),
                "swap_top1": _swap_top1(crops, codes),
                "z_std": losses.embedding_std(aux["embedding"]),
                "h_std": losses.embedding_std(aux["features"]),
                "prototypes_frozen": (step < freeze_steps).astype(jnp.float32),
            }
        )
        return loss, (batch_stats, new_state, metrics)

    return loss_fn


# ----------------------------------------------------------------------------- monitor


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    """SwAV's collapse signatures: loss at ln K (uniform predictions), codes at ln K
    (uniform codes: the prototypes do not tell images apart), embedding std near 0."""
    log_k = math.log(config.swav.num_prototypes)
    out = []
    loss = metrics.get("loss")
    if loss is not None and abs(loss - log_k) < 0.02 * log_k:
        out.append(
            f"loss {loss:.4f} sits at ln(K) = {log_k:.4f}: the predictions are uniform over "
            "the prototypes (collapse); check swav.temperature and the learning rate."
        )
    h = metrics.get("code_entropy")
    if h is not None and h > 0.95 * log_k:
        out.append(
            f"code entropy {h:.4f} is near ln(K) = {log_k:.4f}: every image gets the uniform "
            "code (collapse); lower swav.epsilon or check the projector."
        )
    return out + parts.std_warnings(metrics, {"z_std": config.swav.proj_dim})


def check(values: dict) -> list[str]:
    return parts.multi_crop_problems(values, "SwAV") + parts.queue_problems(
        values, "swav", optional=True
    )


SWAV = Method(
    name="swav",
    build_model=build_model,
    make_views=parts.multi_crop_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.MULTI_CROP_FIELDS,
        **parts.projection_fields("swav"),
        "swav.temperature": POSITIVE,
        "swav.epsilon": POSITIVE,
        "swav.sinkhorn_iters": integer(1, 10**6),
        "swav.num_prototypes": integer(2, MAX_WIDTH),
        "swav.freeze_prototypes_epochs": EPOCHS,
        "swav.queue_size": integer(0, MAX_WIDTH),
        "swav.queue_start_epochs": EPOCHS,
    },
    check=check,
)
