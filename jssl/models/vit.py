"""Vision Transformer (Dosovitskiy et al. 2021) as used by DINO: [CLS] token, learned
position embeddings interpolated to the input's token grid, pre-LN blocks."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

_dense_init = nn.initializers.xavier_uniform()
_embed_init = nn.initializers.truncated_normal(0.02)


class MultiHeadAttention(nn.Module):
    """Self-attention written out so its weights can be returned.

    Call: ``x [B, T, D]`` -> ``(y [B, T, D], attention [B, heads, T, T] float32)``.
    """

    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} is not divisible by num_heads={self.num_heads}.")
        head_dim = d // self.num_heads
        qkv = nn.Dense(
            3 * d, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32, name="qkv"
        )(x)
        qkv = qkv.reshape(b, t, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, heads, head_dim]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(self.dtype)
        # Softmax in float32 so bf16 compute keeps attention rows normalised.
        attention = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", attention.astype(self.dtype), v).reshape(b, t, d)
        y = nn.Dense(
            d, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32, name="proj"
        )(y)
        return y, attention


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        d = x.shape[-1]
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="ln1")(x)
        y, attention = MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(y)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="ln2")(x)
        y = nn.Dense(
            self.mlp_dim,
            kernel_init=_dense_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="mlp_fc1",
        )(y)
        y = nn.gelu(y, approximate=False)
        y = nn.Dense(
            d, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32, name="mlp_fc2"
        )(y)
        return x + y, attention


def interpolate_pos_embed(pos_embed: jnp.ndarray, grid: tuple[int, int]) -> jnp.ndarray:
    """Resizes patch position embeddings [1, gh0*gw0, D] (square base grid) to [1, gh*gw, D].

    Bicubic without antialiasing, as DINO's ``interpolate_pos_encoding``.
    """
    n, d = pos_embed.shape[1:]
    g0 = int(round(n**0.5))
    if g0 * g0 != n:
        raise ValueError(f"position embedding with {n} patch tokens is not a square grid.")
    if grid == (g0, g0):
        return pos_embed
    resized = jax.image.resize(
        pos_embed.reshape(1, g0, g0, d), (1, *grid, d), method="bicubic", antialias=False
    )
    return resized.reshape(1, grid[0] * grid[1], d)


class ViT(nn.Module):
    """Vision Transformer backbone without classifier.

    Attributes:
      patch_size: side of the square patches.
      hidden: token width D.
      depth: number of blocks.
      num_heads: attention heads.
      mlp_dim: hidden width of each block's MLP.
      image_size: resolution the position embeddings are stored for
        ((image_size // patch_size)**2 patch positions + 1 for [CLS]); other input
        sizes get them interpolated, so the same params serve 224 and 96 crops.
      return_attention: also return the last block's attention (overridable per call).
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, H, W, C]`` float, ``train`` (unused: no dropout), optional
    ``return_attention`` -> ``(features [B, D] float32 = final-LN [CLS] output, aux)``
    with aux ``"cls"`` [B, D], ``"feature_map"`` [B, H/p, W/p, D] (final-LN patch tokens) and,
    when asked, ``"attention"`` [B, heads, T, T] with T = 1 + (H/p)(W/p), all float32.
    """

    patch_size: int = 16
    hidden: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    image_size: int = 224
    return_attention: bool = False
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features."""
        return self.hidden

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, *, train: bool, return_attention: bool | None = None
    ) -> tuple[jnp.ndarray, dict]:
        del train  # No dropout / stochastic depth; kept for the shared backbone signature.
        if x.ndim != 4:
            raise ValueError(f"ViT expects images [B, H, W, C]; got shape {x.shape}.")
        if return_attention is None:
            return_attention = self.return_attention
        p = self.patch_size
        if x.shape[1] < p or x.shape[2] < p:
            raise ValueError(f"ViT input {x.shape[1:3]} is smaller than patch_size={p}.")
        x = nn.Conv(
            self.hidden,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="patch_embed",
        )(x.astype(self.dtype))
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)

        g0 = self.image_size // p
        cls_token = self.param("cls_token", _embed_init, (1, 1, d), jnp.float32)
        pos_embed = self.param("pos_embed", _embed_init, (1, 1 + g0 * g0, d), jnp.float32)
        patch_pos = interpolate_pos_embed(pos_embed[:, 1:], (gh, gw))
        pos = jnp.concatenate([pos_embed[:, :1], patch_pos], axis=1).astype(self.dtype)
        cls = jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, d))
        x = jnp.concatenate([cls, x], axis=1) + pos

        attention = None
        for i in range(self.depth):
            x, attention = EncoderBlock(
                self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block{i + 1}"
            )(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
        x = x.astype(jnp.float32)
        features = x[:, 0]
        aux = {"cls": features, "feature_map": x[:, 1:].reshape(b, gh, gw, d)}
        if return_attention:
            aux["attention"] = attention
        return features, aux
