"""I-JEPA's networks (Assran et al., 2023): a ViT context encoder and a narrow ViT predictor
that fills the target blocks' positions with a learned mask token.

Built from the ViT's pieces (``jssl.models.vit``), as facebookresearch/ijepa's
``VisionTransformerPredictor`` (``src/models/vision_transformer.py``): the context tokens
are embedded to the predictor's width and given the fixed 2-D sine-cosine embedding of
their positions; each target block's tokens are the mask token plus the embedding of its
positions; context and one block go through the predictor's blocks together (one row per
block and image, block-major), then a LayerNorm and a projection back to the encoder's
width give the predictions of the block's tokens. Padding tokens (``jssl.masks``' static
shapes) are never attended to.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models.vit import EncoderBlock, sincos_pos_embed

Dtype = Any

__all__ = ["JEPANetwork", "JEPAPredictor"]


class JEPAPredictor(nn.Module):
    """Context tokens -> predictions of the target blocks' tokens.

    Attributes:
      hidden: predictor width (I-JEPA: 384).
      depth: blocks (I-JEPA: 12).
      num_heads: attention heads.
      mlp_dim: hidden width of each block's MLP (4 x hidden).
      dtype: compute dtype; parameters are always float32.

    Call: ``context`` [N, Kc, D] (the context encoder's patch tokens), ``context_index``
    int [N, Kc] and ``context_valid`` bool [N, Kc] (their patches and which are real),
    ``target_index`` int [M, N, Kt] and ``target_valid`` bool [M, N, Kt], ``grid`` (gh, gw)
    -> predictions [M, N, Kt, D] float32.
    """

    hidden: int = 384
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 1536
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, context, context_index, context_valid, target_index, target_valid, grid):
        m, n, kt = target_index.shape
        kc, d = context.shape[1], context.shape[-1]
        pos = sincos_pos_embed(self.hidden, grid)[0].astype(self.dtype)  # [L, Dp]
        dense = lambda width, name: nn.Dense(
            width, kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
            param_dtype=jnp.float32, name=name,
        )  # fmt: skip
        x = dense(self.hidden, "embed")(context.astype(self.dtype)) + pos[context_index]
        token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.hidden))
        # One sequence per (image, block), image-major: [N, M, ...] -> [N * M, ...] keeps the
        # images' sharding over devices (block-major would gather every image to each).
        targets = token.astype(self.dtype) + pos[target_index.swapaxes(0, 1)]  # [N, M, Kt, Dp]
        x = jnp.broadcast_to(x[:, None], (n, m, kc, self.hidden))
        tokens = jnp.concatenate([x, targets], axis=2).reshape(n * m, kc + kt, self.hidden)
        attend = jnp.concatenate(
            [jnp.broadcast_to(context_valid[:, None], (n, m, kc)), target_valid.swapaxes(0, 1)],
            axis=2,
        ).reshape(n * m, kc + kt)
        for i in range(self.depth):
            tokens, _ = EncoderBlock(
                self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block{i + 1}"
            )(tokens, attend.astype(bool))
        tokens = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="norm")(
            tokens[:, kc:]
        )
        out = dense(d, "proj")(tokens)
        return out.reshape(n, m, kt, d).swapaxes(0, 1).astype(jnp.float32)


class JEPANetwork(nn.Module):
    """The ViT ``encoder`` (context encoder; its EMA copy is the target encoder) and the
    ``predictor``.

    ``__call__(x, *, train)`` -> ``(h, aux)``: h [N, D] the mean of the final-LN patch tokens
    of the whole image (I-JEPA has no trained [CLS] token; its evaluations pool the patch
    tokens), what evaluation uses. ``targets(x)`` -> [N, L, D] every patch token;
    ``predict(x, context, context_valid, targets, targets_valid)`` -> [M, N, Kt, D].
    """

    encoder: nn.Module
    predictor: nn.Module

    def __call__(self, x: jax.Array, *, train: bool):
        h, aux = self.encoder(x, train=train)
        fmap = aux["feature_map"]
        pooled = jnp.mean(fmap, axis=(1, 2))
        if self.is_initializing():  # the predictor's parameters are made here too
            n, gh, gw, _ = fmap.shape
            one = jnp.zeros((n, 1), jnp.int32)
            self.predictor(fmap.reshape(n, -1, fmap.shape[-1])[:, :1], one, one > -1,
                           one[None], one[None] > -1, (gh, gw))  # fmt: skip
        return pooled, {**aux, "cls": h, "features": pooled}

    def targets(self, x: jax.Array, *, train: bool) -> jax.Array:
        _, aux = self.encoder(x, train=train)
        fmap = aux["feature_map"]
        return fmap.reshape(fmap.shape[0], -1, fmap.shape[-1])

    def predict(self, x, context, context_valid, targets, targets_valid, *, train: bool):
        _, aux = self.encoder(x, train=train, keep=context, keep_valid=context_valid)
        p = self.encoder.patch_size
        grid = (x.shape[1] // p, x.shape[2] // p)
        return self.predictor(
            aux["patch_tokens"], context, context_valid, targets, targets_valid, grid
        )
