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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.errors import UserError
from jssl.methods.base import Method, apply_train
from jssl.methods.recovery import build_decoder, clean_views
from jssl.models import Decoder, create_model

Dtype = Any
BOTTLENECKS = ("lowdim", "sparse", "vq")
SPARSITY = ("l1", "topk")


def top_k_mask(code: jax.Array, k: int) -> jax.Array:
    """Keeps the k largest entries of each row of code [B, K] and zeroes the rest.

    Gradients flow to the kept entries only. Ties at the k-th value may keep more.
    """
    kth = jax.lax.top_k(code, k)[0][:, -1:]
    return jnp.where(code >= kth, code, 0.0)


def quantize(z_e: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest codes: z_e [..., D], codebook [K, D] -> (z_q [..., D], indices [...] int32)."""
    flat = z_e.reshape(-1, z_e.shape[-1]).astype(jnp.float32)
    d2 = (
        jnp.sum(jnp.square(flat), axis=1, keepdims=True)
        - 2.0 * flat @ codebook.T
        + jnp.sum(jnp.square(codebook), axis=1)[None, :]
    )
    idx = jnp.argmin(d2, axis=1).astype(jnp.int32)
    return codebook[idx].reshape(z_e.shape), idx.reshape(z_e.shape[:-1])


class Autoencoder(nn.Module):
    """backbone -> bottleneck -> decoder.

    Call: ``x [B, H, W, C]`` -> ``(reconstruction [B, H, W, C], aux)``; aux holds
    "features" (pooled encoder output, for evaluation), "code" ([B, K] for
    vector codes, [B, h, w, D] quantised for VQ) and, for VQ, "z_e", "z_q" and
    "indices" [B, h, w].
    """

    backbone: nn.Module
    decoder: Decoder
    bottleneck: str = "lowdim"
    code_dim: int = 32
    sparse_dim: int = 256
    sparsity: str = "topk"
    top_k: int = 16
    num_codes: int = 128
    code_channels: int = 32
    normalize_codes: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(
                f"Unknown bottleneck {self.bottleneck!r}; valid: {', '.join(BOTTLENECKS)}."
            )
        h, aux = self.backbone(x, train=train)
        fmap = aux["feature_map"]
        out_shape = x.shape[1:]
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        if self.bottleneck == "vq":
            z_e = nn.Conv(
                self.code_channels,
                (1, 1),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="to_code",
            )(fmap).astype(jnp.float32)
            codebook = self.param(
                "codebook", nn.initializers.normal(1.0), (self.num_codes, self.code_channels)
            )
            if self.normalize_codes:  # look up by cosine similarity (Yu et al. 2022, ViT-VQGAN)
                z_e, codebook = losses.l2_normalize(z_e), losses.l2_normalize(codebook)
            z_q, idx = quantize(z_e, codebook)
            z_st = z_e + jax.lax.stop_gradient(z_q - z_e)  # straight-through estimator
            recon = self.decoder(z_st, out_shape=out_shape, train=train)
            extra = {"code": z_q, "z_e": z_e, "z_q": z_q, "indices": idx}
        else:
            if self.bottleneck == "lowdim":
                code = dense(self.code_dim, "to_code")(h)
            else:
                if self.sparsity not in SPARSITY:
                    raise ValueError(
                        f"Unknown sparsity {self.sparsity!r}; valid: {', '.join(SPARSITY)}."
                    )
                code = nn.relu(dense(self.sparse_dim, "to_code")(h))
                if self.sparsity == "topk":
                    code = top_k_mask(code, self.top_k)
            seed = dense(fmap.shape[1] * fmap.shape[2] * fmap.shape[3], "from_code")(code)
            seed = nn.relu(seed.reshape(fmap.shape))
            recon = self.decoder(seed, out_shape=out_shape, train=train)
            extra = {"code": code.astype(jnp.float32)}
        return recon, {**aux, **extra, "features": h}


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
        decoder=build_decoder(config),
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


def init_method_state(params, config: ml_collections.ConfigDict):
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


def make_loss(model, config: ml_collections.ConfigDict):
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


AUTOENCODER = Method(
    name="autoencoder",
    build_model=build_model,
    make_views=clean_views,  # the loss reconstructs the crop/flip views
    make_loss=make_loss,
    init_method_state=init_method_state,
    collapse_warnings=collapse_warnings,
)
