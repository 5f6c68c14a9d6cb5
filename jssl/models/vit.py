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

    Call: ``x [B, T, D]``, optional ``mask`` bool [B, T] (the tokens that may be attended
    to: padding is False) -> ``(y [B, T, D], attention [B, heads, T, T] float32)``.
    """

    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, mask: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
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
        logits = logits.astype(jnp.float32)
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        attention = jax.nn.softmax(logits, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", attention.astype(self.dtype), v).reshape(b, t, d)
        y = nn.Dense(
            d, kernel_init=_dense_init, dtype=self.dtype, param_dtype=jnp.float32, name="proj"
        )(y)
        return y, attention


class LayerScale(nn.Module):
    """x * gamma, a learned per-channel scale starting at ``init`` (CaiT; DINOv2's ls1, ls2)."""

    init: float

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        gamma = self.param("gamma", nn.initializers.constant(self.init), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); ``mask`` [B, T] (optional)
    keeps the attention off padding tokens. ``layer_scale`` > 0: each branch is scaled by a
    learned per-channel ``LayerScale`` starting there (DINOv2: 1e-5), named ``ls1``/``ls2``."""

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32
    layer_scale: float = 0.0

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, mask: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        d = x.shape[-1]
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="ln1")(x)
        y, attention = MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(y, mask)
        if self.layer_scale:
            y = LayerScale(self.layer_scale, name="ls1")(y)
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
        if self.layer_scale:
            y = LayerScale(self.layer_scale, name="ls2")(y)
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


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> jnp.ndarray:
    """Fixed 2-D sine-cosine position embeddings [1, gh*gw, dim] (MAE's get_2d_sincos_pos_embed).

    The first dim/2 channels encode the column, the last dim/2 the row, each as
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim/4)), k < dim/4;
    patches in row-major order. No parameters: MAE keeps them frozen.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine position embeddings need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (jnp.arange(dim // 4, dtype=jnp.float32) / (dim / 4))

    def one_axis(pos):  # [n] -> [n, dim / 2]
        out = pos[:, None] * omega[None]
        return jnp.concatenate([jnp.sin(out), jnp.cos(out)], axis=1)

    rows, cols = jnp.meshgrid(
        jnp.arange(grid[0], dtype=jnp.float32),
        jnp.arange(grid[1], dtype=jnp.float32),
        indexing="ij",
    )
    emb = jnp.concatenate([one_axis(cols.reshape(-1)), one_axis(rows.reshape(-1))], axis=1)
    return emb[None]


POS_EMBEDDINGS = ("learned", "sincos")


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
      pos_embedding: "learned" (DINO: a parameter, interpolated to other grids) or
        "sincos" (MAE: fixed 2-D sine-cosine embeddings of the input's grid, no parameter;
        the [CLS] token gets none).
      mask_token: create a learned ``mask_token`` [1, 1, D] (zeros at init) that replaces
        the patch embeddings where the call's ``mask`` is set (DINOv2's masked student).
        Off, the parameter tree has no such entry.
      num_registers: R learned register tokens (Darcet et al., 2024; DINOv2's and DINOv3's
        "storage tokens") after [CLS], without position embeddings: they take part in
        attention and are left out of every output (0: none, no parameter).
      layer_scale: > 0: LayerScale in every block, starting at this value (DINOv2: 1e-5);
        0: none (no parameter).
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, H, W, C]`` float, ``train`` (unused: no dropout), optional
    ``return_attention`` -> ``(features [B, D] float32 = final-LN [CLS] output, aux)``
    with aux ``"cls"`` [B, D], ``"feature_map"`` [B, H/p, W/p, D] (final-LN patch tokens) and,
    when asked, ``"attention"`` [B, heads, T, T] with T = 1 + R + (H/p)(W/p) ([CLS], the
    registers, the patches), all float32.

    Optional ``mask`` bool [B, L] (L = (H/p)(W/p), row-major patches): those patch
    embeddings become the mask token before the position embeddings are added (needs
    ``mask_token=True``). Optional ``keep`` int [B, K]: only these patch tokens (after
    their position embeddings) go through the blocks with [CLS] (MAE's encoder on the
    visible patches); aux then has ``"patch_tokens"`` [B, K, D] in place of
    ``"feature_map"``, and T = 1 + K. With ``keep`` an optional ``keep_valid`` bool [B, K]
    marks padding among them: no token attends to it (I-JEPA's context of a varying size
    in a static shape).
    """

    patch_size: int = 16
    hidden: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    image_size: int = 224
    return_attention: bool = False
    pos_embedding: str = "learned"
    mask_token: bool = False
    num_registers: int = 0
    layer_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features."""
        return self.hidden

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        train: bool,
        return_attention: bool | None = None,
        mask: jnp.ndarray | None = None,
        keep: jnp.ndarray | None = None,
        keep_valid: jnp.ndarray | None = None,
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
        if self.mask_token:
            token = self.param("mask_token", nn.initializers.zeros, (1, 1, d), jnp.float32)
        if mask is not None:
            if not self.mask_token:
                raise ValueError("a ViT called with a mask needs mask_token=True.")
            if mask.shape != (b, gh * gw):
                raise ValueError(f"mask must be [B, L] = {(b, gh * gw)}, got {mask.shape}.")
            x = jnp.where(mask[..., None], token.astype(self.dtype), x)

        cls_token = self.param("cls_token", _embed_init, (1, 1, d), jnp.float32)
        if self.pos_embedding == "learned":
            g0 = self.image_size // p
            pos_embed = self.param("pos_embed", _embed_init, (1, 1 + g0 * g0, d), jnp.float32)
            patch_pos = interpolate_pos_embed(pos_embed[:, 1:], (gh, gw)).astype(self.dtype)
            cls_pos = pos_embed[:, :1].astype(self.dtype)
        elif self.pos_embedding == "sincos":
            patch_pos = sincos_pos_embed(d, (gh, gw)).astype(self.dtype)
            cls_pos = jnp.zeros((1, 1, d), self.dtype)
        else:
            raise ValueError(
                f"Unknown pos_embedding {self.pos_embedding!r}; valid: {', '.join(POS_EMBEDDINGS)}."
            )
        cls = jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, d))
        if keep is None:
            pos = jnp.concatenate([cls_pos, patch_pos], axis=1)
            x = jnp.concatenate([cls, x], axis=1) + pos
        else:
            x = x + patch_pos
            x = jnp.take_along_axis(x, keep[..., None].astype(jnp.int32), axis=1)
            x = jnp.concatenate([cls + cls_pos, x], axis=1)

        r = self.num_registers
        if r:
            registers = self.param("registers", _embed_init, (1, r, d), jnp.float32)
            registers = jnp.broadcast_to(registers.astype(self.dtype), (b, r, d))
            x = jnp.concatenate([x[:, :1], registers, x[:, 1:]], axis=1)
        attend = None
        if keep is not None and keep_valid is not None:
            attend = jnp.concatenate([jnp.ones((b, 1 + r), bool), keep_valid.astype(bool)], axis=1)
        attention = None
        for i in range(self.depth):
            x, attention = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                dtype=self.dtype,
                layer_scale=self.layer_scale,
                name=f"block{i + 1}",
            )(x, attend)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
        x = x.astype(jnp.float32)
        features = x[:, 0]
        if keep is None:
            aux = {"cls": features, "feature_map": x[:, 1 + r :].reshape(b, gh, gw, d)}
        else:
            aux = {"cls": features, "patch_tokens": x[:, 1 + r :]}
        if return_attention:
            aux["attention"] = attention
        return features, aux
