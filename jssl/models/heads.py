"""Projection / prediction heads."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize
from jssl.models.layers import batch_norm

Dtype = Any

_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}


class MLPHead(nn.Module):
    """The one projection / prediction MLP: Linear-(BN)-activation per hidden width, a final
    Linear, optionally a BatchNorm on the output.

    Hidden Linear layers have no bias when followed by BN (BN's shift replaces it).
    The options cover the methods' heads: SimCLR's projection is
    ``MLPHead((feature_dim,), 128)``; BYOL's projector and predictor, Barlow Twins'
    projector and VICReg's expander end in a Linear without bias (``last_bias=False``:
    deepmind-research/byol's last ``hk.Linear(with_bias=False)``, the others' last
    ``nn.Linear(bias=False)``; their losses are blind to a constant shift there, so a
    bias would only get rounding-noise gradients, which Adam turns into full steps);
    SimSiam's projector ends in ``BatchNorm1d(dim, affine=False)`` (``out_bn=True``);
    MoCo v3's in a BN without scale, NNCLR's in a BN with a learned scale
    (``out_bn_scale=True``). The output BN never has a shift, and the Linear before it
    no bias (what follows it, L2 normalisation or a predictor starting with BN, removes
    a constant shift).

    Attributes:
      hidden_dims: width of each hidden layer; () gives a single Linear.
      out_dim: output width.
      use_bn: BatchNorm after each hidden Linear.
      activation: "relu" or "gelu".
      last_bias: a bias on the final Linear (never with ``out_bn``).
      out_bn: BatchNorm on the output (``output_bn``; no shift).
      out_bn_scale: the output BN learns a scale.
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, D]``, ``train`` -> ``[B, out_dim]`` float32. Parameters
    ``Dense_0 ... Dense_n`` (n = len(hidden_dims)), ``BatchNorm_i`` after hidden
    layer i, and ``output_bn``.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    activation: str = "relu"
    last_bias: bool = True
    out_bn: bool = False
    out_bn_scale: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}; valid: {sorted(_ACTIVATIONS)}."
            )
        act = _ACTIVATIONS[self.activation]
        x = x.astype(self.dtype)
        for width in self.hidden_dims:
            x = nn.Dense(
                width, use_bias=not self.use_bn, dtype=self.dtype, param_dtype=jnp.float32
            )(x)
            if self.use_bn:
                x = batch_norm(train, dtype=self.dtype)(x)
            x = act(x)
        use_bias = self.last_bias and not self.out_bn
        x = nn.Dense(self.out_dim, use_bias=use_bias, dtype=self.dtype, param_dtype=jnp.float32)(x)
        if self.out_bn:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                use_scale=self.out_bn_scale,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="output_bn",
            )(x)
        return x.astype(jnp.float32)


class WeightNormDense(nn.Module):
    """Bias-free weight-normalised Linear: w[:, k] = g[k] * v[:, k] / ||v[:, k]||.

    With ``learn_scale=False`` the norm g is fixed to 1 and not a parameter
    (DINO's default: the outputs are cosine similarities to K prototypes).

    Call: ``x [B, D]`` -> ``[B, features]``. Parameters: ``kernel`` v [D, features]
    and, when learned, ``scale`` g [features] (initialised to 1).
    """

    features: int
    learn_scale: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # PyTorch's default Linear init, U(+-1/sqrt(fan_in)), as DINO's last layer
        # gets: only the direction of v matters, but its norm sets the step size.
        init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        v = self.param("kernel", init, (x.shape[-1], self.features))
        w = l2_normalize(v, axis=0)
        if self.learn_scale:
            w = w * self.param("scale", nn.initializers.ones, (self.features,))
        return jnp.dot(x.astype(self.dtype), w.astype(self.dtype))


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> bottleneck -> L2 normalise -> weight-normalised Linear.

    MLP: ``num_layers - 1`` blocks Linear(hidden_dim)-(BN)-GELU, then
    Linear(bottleneck_dim) (a single Linear when num_layers == 1); Linear
    layers use truncated-normal(0.02) kernels and zero biases as DINO does
    (no bias on a Linear followed by BN).

    Attributes:
      out_dim: K, the number of prototypes (DINO: 65,536).
      hidden_dim: MLP width (2048).
      bottleneck_dim: width before the last layer (256).
      num_layers: MLP layers (3).
      use_bn: BatchNorm in the MLP (off for ViTs in DINO).
      norm_last_layer: True fixes the last layer's weight norm g to 1 (DINO's
        default, more stable); False learns g, the "non-normalised last layer".
      dtype: compute dtype; parameters are always float32.

    The last layer is the submodule ``last_layer``; DINO freezes it during the
    first epoch (``jssl.methods.dino`` does so by stopping its gradient).

    Call: ``x [B, D]``, ``train`` -> ``[B, out_dim]`` float32.
    """

    out_dim: int
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.num_layers < 1:
            raise ValueError(f"DINOHead needs num_layers >= 1, got {self.num_layers}.")
        dense = lambda width, use_bias=True: nn.Dense(
            width,
            use_bias=use_bias,
            kernel_init=nn.initializers.truncated_normal(0.02),
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        x = x.astype(self.dtype)
        for _ in range(self.num_layers - 1):
            # No bias before BN: BN's shift replaces it (a bias there only gets
            # rounding-noise gradients, which Adam would blow up to full steps).
            x = dense(self.hidden_dim, use_bias=not self.use_bn)(x)
            if self.use_bn:
                x = batch_norm(train, dtype=self.dtype)(x)
            x = nn.gelu(x, approximate=False)
        x = dense(self.bottleneck_dim)(x)
        # Normalise in float32: a bf16 norm of a 256-d vector loses digits.
        x = l2_normalize(x.astype(jnp.float32), axis=-1)
        x = WeightNormDense(
            self.out_dim, learn_scale=not self.norm_last_layer, dtype=self.dtype, name="last_layer"
        )(x)
        return x.astype(jnp.float32)
