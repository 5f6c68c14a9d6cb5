"""Masked autoencoder (He et al., 2022): a ViT encoder on the visible patches and a small
transformer decoder that predicts the pixels of every patch.

Built from the ViT's pieces (``jssl.models.vit``): the encoder is a ``ViT`` (MAE uses
``pos_embedding="sincos"``) called with ``keep``; the decoder is a stack of the same
``EncoderBlock``s with its own fixed sine-cosine position embeddings, as MAE's
``forward_decoder``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models.vit import EncoderBlock, sincos_pos_embed

Dtype = Any

_dense_init = nn.initializers.xavier_uniform()  # MAE: xavier_uniform for every Linear


class MAEDecoder(nn.Module):
    """Encoder tokens of the visible patches -> predicted pixels of every patch.

    Attributes:
      hidden: decoder width (MAE: 512).
      depth: decoder blocks (MAE: 8).
      num_heads: attention heads (MAE: 16).
      mlp_dim: hidden width of each block's MLP (MAE: 4 x hidden).
      dtype: compute dtype; parameters are always float32.

    Call: ``tokens [B, 1 + K, D]`` (final-LN [CLS] then the K visible patch tokens, in
    ``keep`` order), ``restore`` int [B, L] (position of patch l in [visible..., masked...]),
    ``grid`` (gh, gw) with gh * gw = L, ``patch_dim`` = p * p * C (pixels per patch)
    -> ``pred [B, L, patch_dim]`` float32.
    """

    hidden: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_dim: int = 2048
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, tokens: jax.Array, restore: jax.Array, grid: tuple[int, int], patch_dim: int
    ) -> jax.Array:
        b, t, _ = tokens.shape
        n = restore.shape[1]
        if grid[0] * grid[1] != n:
            raise ValueError(f"restore has {n} patches, the grid {grid} has {grid[0] * grid[1]}.")
        x = nn.Dense(
            self.hidden, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32,
            name="embed",
        )(tokens.astype(self.dtype))  # fmt: skip
        mask_token = self.param(
            "mask_token", nn.initializers.normal(0.02), (1, 1, self.hidden), jnp.float32
        )
        fill = jnp.broadcast_to(mask_token.astype(self.dtype), (b, n - (t - 1), self.hidden))
        patches = jnp.concatenate([x[:, 1:], fill], axis=1)  # [B, L, Dd]: visible, then masked
        patches = jnp.take_along_axis(patches, restore[..., None].astype(jnp.int32), axis=1)
        pos = sincos_pos_embed(self.hidden, grid).astype(self.dtype)
        x = jnp.concatenate([x[:, :1], patches + pos], axis=1)  # [CLS] gets no position
        for i in range(self.depth):
            x, _ = EncoderBlock(
                self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block{i + 1}"
            )(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
        pred = nn.Dense(
            patch_dim, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32,
            name="pred",
        )(x[:, 1:])  # fmt: skip
        return pred.astype(jnp.float32)


class MaskedAutoencoder(nn.Module):
    """backbone (a ViT) + MAEDecoder; parameters {"backbone", "decoder"}.

    ``__call__(x, *, train)`` without ``keep`` is the evaluation path: the encoder on
    every patch of the whole image, no masking, returning ``(features [B, D], aux)`` with
    ``aux["features"]`` the final-LN [CLS] token (MAE's linear probe representation).
    With ``keep`` [B, K] and ``restore`` [B, L] (``jssl.methods.mae.random_masking``) it
    returns ``(pred [B, L, p*p*C], aux)``: the encoder sees the K visible patches only.
    """

    backbone: nn.Module
    decoder: nn.Module

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        keep: jax.Array | None = None,
        restore: jax.Array | None = None,
    ):
        if keep is None:
            h, aux = self.backbone(x, train=train)
            if self.is_initializing():  # the decoder's parameters are made here too
                n = (x.shape[1] // self.backbone.patch_size) * (
                    x.shape[2] // self.backbone.patch_size
                )
                every = jnp.broadcast_to(jnp.arange(n), (x.shape[0], n))
                self.reconstruct(x, train=train, keep=every, restore=every)
            return h, {**aux, "features": h}
        if restore is None:
            raise ValueError("MaskedAutoencoder: keep needs restore.")
        return self.reconstruct(x, train=train, keep=keep, restore=restore)

    def reconstruct(self, x: jax.Array, *, train: bool, keep: jax.Array, restore: jax.Array):
        """``(pred [B, L, p*p*C], aux)`` from the visible patches ``keep`` [B, K] of x."""
        p = self.backbone.patch_size
        h, aux = self.backbone(x, train=train, keep=keep)
        tokens = jnp.concatenate([h[:, None], aux["patch_tokens"]], axis=1)
        pred = self.decoder(
            tokens, restore, (x.shape[1] // p, x.shape[2] // p), p * p * x.shape[-1]
        )
        return pred, {**aux, "features": h}
