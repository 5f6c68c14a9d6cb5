"""Encoder-decoder networks: backbone -> (bottleneck) -> :class:`Decoder`.

- :class:`EncoderDecoder` (denoising, inpainting, colorization): the backbone's
  feature map decoded to an image-like output;
- :class:`Autoencoder`: the same through a low-dimensional, sparse or
  vector-quantised code;
- :class:`VAE`: a Gaussian latent decoded by a :class:`VectorDecoder`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, pretext
from jssl.models.decoders import Decoder, VectorDecoder

Dtype = Any
BOTTLENECKS = ("lowdim", "sparse", "vq")
SPARSITY = ("l1", "topk")


def lightness(x: jax.Array) -> jax.Array:
    """Images [B, H, W, C] in [0, 1] -> (L - 50) / 50 of CIE Lab, [B, H, W, 1] in [-1, 1]."""
    return (pretext.rgb_to_lab(x)[..., :1] - 50.0) / 50.0


class EncoderDecoder(nn.Module):
    """backbone -> feature map -> Decoder -> [B, H, W, out_channels].

    Attributes:
      backbone: any jssl backbone (its ``aux["feature_map"]`` is decoded).
      decoder: the Decoder.
      out_channels: output channels; 0 means as many as the input.
      lightness_input: feed the backbone the Lab lightness of the input instead
        of the input itself (colorization); the input stays RGB so evaluation
        and initialisation see ordinary images.

    Call: ``x [B, H, W, C]`` -> ``(output [B, H, W, out], aux)`` with
    ``aux["features"]`` the backbone's pooled features.
    """

    backbone: nn.Module
    decoder: Decoder
    out_channels: int = 0
    lightness_input: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        inp = lightness(x) if self.lightness_input else x
        h, aux = self.backbone(inp, train=train)
        out_c = self.out_channels or x.shape[-1]
        y = self.decoder(aux["feature_map"], out_shape=(*x.shape[1:3], out_c), train=train)
        return y, {**aux, "features": h}


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


class VAE(nn.Module):
    """Gaussian-latent VAE around any backbone.

    Call: ``x [B, H, W, C]``, ``train``, optional ``eps [B, latent_dim]`` ->
    ``(reconstruction mean [B, H, W, C], aux)``: z = mean + exp(log_var / 2) * eps,
    or z = mean without eps (evaluation). aux: "features" (pooled encoder
    output, for evaluation), "mean", "log_var", "z", "log_scale" [] (of p(x|z)).
    ``decode(z, out_shape=..., train=...)`` maps latents to image means.
    """

    backbone: nn.Module
    decoder: Decoder
    latent_dim: int = 16
    seed_shape: tuple[int, int, int] = (4, 4, 64)
    dtype: Dtype = jnp.float32

    def setup(self):
        self.to_latent = nn.Dense(2 * self.latent_dim, dtype=self.dtype, param_dtype=jnp.float32)
        self.generator = VectorDecoder(
            seed_shape=tuple(self.seed_shape), decoder=self.decoder, dtype=self.dtype
        )
        # One learned log-scale for all pixels (the channel count is unknown until called).
        self.log_scale = self.param("log_scale", nn.initializers.zeros, (), jnp.float32)

    def decode(self, z: jax.Array, *, out_shape: tuple[int, int, int], train: bool) -> jax.Array:
        return self.generator(z, out_shape=out_shape, train=train)

    def __call__(self, x: jax.Array, *, train: bool, eps: jax.Array | None = None):
        h, aux = self.backbone(x, train=train)
        stats = self.to_latent(h).astype(jnp.float32)
        mean, log_var = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        log_var = jnp.clip(log_var, -12.0, 8.0)  # keeps exp() finite early in training
        z = mean if eps is None else mean + jnp.exp(0.5 * log_var) * eps
        recon = self.decode(z, out_shape=x.shape[1:], train=train)
        aux = {**aux, "features": h, "mean": mean, "log_var": log_var, "z": z}
        return recon, {**aux, "log_scale": self.log_scale}
