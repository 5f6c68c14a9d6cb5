"""Bottleneck autoencoders: the encoder must squeeze the image through a code.

``autoencoder.bottleneck`` picks the code:

- "lowdim": a linear code of ``code_dim`` (<< pixels) from the pooled features;
- "sparse": an overcomplete ReLU code of ``sparse_dim`` kept sparse by an L1
  penalty (``sparsity="l1"``) or by keeping the ``top_k`` largest units per
  example (``sparsity="topk"``, Makhzani & Frey 2013);
- "vq": every position of the feature map is replaced by its nearest of
  ``num_codes`` learned code vectors (van den Oord et al. 2017), with
  straight-through gradients, the codebook and commitment losses (optionally
  on L2-normalised vectors with ``normalize_codes``, a cosine lookup), and
  monitoring of dead codes (a bias-corrected EMA of each code's share of the
  assignments, kept in the method state and so checkpointed; a code is dead
  when its share is below ``dead_threshold / K``).

Vector codes are decoded by Dense -> the backbone's feature-map shape -> Decoder;
VQ codes by the Decoder directly. Evaluation uses the encoder's pooled features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MOMENTUM, NON_NEGATIVE, WIDTH, boolean, one_of
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import Autoencoder, create_model
from jssl.models.autoencoders import BOTTLENECKS, SPARSITY


def build_model(config: ml_collections.ConfigDict) -> Autoencoder:
    dtype = jnp.dtype(config.model.dtype)
    ac = config.autoencoder
    if ac.bottleneck not in BOTTLENECKS:
        raise UserError(
            f"Unknown autoencoder.bottleneck {ac.bottleneck!r}; valid: {', '.join(BOTTLENECKS)}."
        )
    if ac.sparsity not in SPARSITY:
        raise UserError(
            f"Unknown autoencoder.sparsity {ac.sparsity!r}; valid: {', '.join(SPARSITY)}."
        )
    return Autoencoder(
        backbone=create_model(config.model.name, dtype=dtype, **config.model.kwargs),
        decoder=parts.build_decoder(config),
        bottleneck=ac.bottleneck,
        code_dim=ac.code_dim,
        sparse_dim=ac.sparse_dim,
        sparsity=ac.sparsity,
        top_k=ac.top_k,
        num_codes=ac.num_codes,
        code_channels=ac.code_channels,
        normalize_codes=ac.normalize_codes,
        dtype=dtype,
    )


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run=None):
    ac = config.autoencoder
    if ac.bottleneck != "vq":
        return {}
    # Zeros + bias correction (as Adam's moments): a code never used counts as dead at once.
    return {"code_usage": jnp.zeros((ac.num_codes,), jnp.float32)}


def dead_codes(usage: jax.Array, *, threshold: float) -> jax.Array:
    """Number of codes whose share of the assignments is below threshold / K."""
    return jnp.sum(usage < threshold / usage.shape[0]).astype(jnp.float32)


def debiased(ema: jax.Array, step: jax.Array, momentum: float) -> jax.Array:
    """EMA started at zero, divided by 1 - momentum^(step + 1): an unbiased running mean."""
    return ema / (1.0 - momentum ** (step + 1).astype(jnp.float32))


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    ac = config.autoencoder

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x = views
        recon, aux, batch_stats = apply_train(model, params, batch_stats, x)
        rec = losses.masked_mse(recon, x)
        metrics = {"recon_mse": rec, "h_std": losses.embedding_std(aux["features"])}
        loss = rec
        if ac.bottleneck == "sparse":
            code = aux["code"]
            metrics["active_fraction"] = jnp.mean((code > 0).astype(jnp.float32))
            if ac.sparsity == "l1":
                l1 = losses.l1_sparsity(code)
                metrics["l1"] = l1
                loss = loss + ac.l1_weight * l1
        elif ac.bottleneck == "vq":
            codebook_loss, commitment = losses.vq_losses(aux["z_e"], aux["z_q"])
            loss = loss + codebook_loss + ac.commitment * commitment
            usage, perplexity = losses.codebook_usage(aux["indices"], ac.num_codes)
            m = ac.usage_momentum
            new_usage = m * method_state["code_usage"] + (1.0 - m) * usage
            method_state = {"code_usage": new_usage}
            metrics.update(
                codebook_loss=codebook_loss,
                commitment_loss=commitment,
                perplexity=perplexity,
                codes_used_in_batch=jnp.sum(usage > 0).astype(jnp.float32),
                dead_codes=dead_codes(debiased(new_usage, step, m), threshold=ac.dead_threshold),
            )
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    ac = config.autoencoder
    if ac.bottleneck == "vq" and metrics.get("dead_codes", 0.0) > 0.5 * ac.num_codes:
        return [
            f"{metrics['dead_codes']:.0f} of {ac.num_codes} codes are dead (used less than "
            f"{ac.dead_threshold:g}/K of the time): the codebook is underused"
        ]
    return []


def check(values: dict) -> list[str]:
    top_k, dim = values.get("autoencoder.top_k"), values.get("autoencoder.sparse_dim")
    sparse_topk = (
        values.get("autoencoder.bottleneck") == "sparse"
        and values.get("autoencoder.sparsity") == "topk"
    )
    if sparse_topk and top_k is not None and dim is not None and top_k > dim:
        return [
            f"autoencoder.top_k={top_k}: more active units than sparse_dim={dim}; use at most {dim}"
        ]
    return []


def picture_rows(model, variables, images, x, key, config) -> list:
    """Test images and their reconstructions."""
    return [x, model.apply(variables, x, train=False)[0]]


AUTOENCODER = Method(
    name="autoencoder",
    build_model=build_model,
    make_views=parts.clean_views,  # the loss reconstructs the crop/flip views
    make_loss=make_loss,
    init_method_state=init_method_state,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.CROP_FLIP_FIELDS,
        **parts.DECODER_FIELDS,
        "autoencoder.bottleneck": one_of(tuple(BOTTLENECKS), "autoencoder.bottleneck"),
        "autoencoder.code_dim": WIDTH,
        "autoencoder.sparse_dim": WIDTH,
        "autoencoder.sparsity": one_of(tuple(SPARSITY), "autoencoder.sparsity"),
        "autoencoder.top_k": WIDTH,
        "autoencoder.l1_weight": NON_NEGATIVE,
        "autoencoder.num_codes": WIDTH,
        "autoencoder.code_channels": WIDTH,
        "autoencoder.commitment": NON_NEGATIVE,
        "autoencoder.normalize_codes": boolean,
        "autoencoder.usage_momentum": MOMENTUM,
        "autoencoder.dead_threshold": NON_NEGATIVE,
    },
    check=check,
    picture_rows=picture_rows,
)
