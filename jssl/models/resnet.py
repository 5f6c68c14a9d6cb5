"""ResNet backbones (He et al. 2016) with CIFAR (3x3) or ImageNet (7x7 + max-pool) stems.

Convolutions have no bias (BatchNorm follows each), kernels use He-normal fan-out
init as torchvision does, and the stride of a bottleneck block sits on its 3x3
conv (ResNet v1.5), so parameter counts match torchvision's resnet18/34/50.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jssl.models.conv import conv_fn
from jssl.models.layers import batch_norm

Dtype = Any

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
    features: int,
    kernel: int,
    stride: int,
    dtype: Dtype,
    name: str | None = None,
    impl: str = "auto",
):
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_fn(impl, stride),
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; [B, H, W, C] -> [B, H/s, W/s, features]."""

    features: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        impl = self.conv_impl
        y = _conv(self.features, 3, self.stride, self.dtype, impl=impl)(x)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = _conv(self.features, 3, 1, self.dtype, impl=impl)(y)
        y = batch_norm(train, dtype=self.dtype, zero_scale=self.zero_init_residual)(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = _conv(self.features, 1, self.stride, self.dtype, name="proj_conv", impl=impl)(x)
            x = batch_norm(train, dtype=self.dtype, name="proj_bn")(x)
        return nn.relu(x + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4 channels); [B, H, W, C] -> [B, H/s, W/s, 4*features]."""

    features: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        out = self.features * self.expansion
        impl = self.conv_impl
        y = _conv(self.features, 1, 1, self.dtype, impl=impl)(x)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = _conv(self.features, 3, self.stride, self.dtype, impl=impl)(y)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = _conv(out, 1, 1, self.dtype, impl=impl)(y)
        y = batch_norm(train, dtype=self.dtype, zero_scale=self.zero_init_residual)(y)
        if x.shape[-1] != out or self.stride != 1:
            x = _conv(out, 1, self.stride, self.dtype, name="proj_conv", impl=impl)(x)
            x = batch_norm(train, dtype=self.dtype, name="proj_bn")(x)
        return nn.relu(x + y)


_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
    """ResNet backbone without classifier.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: "basic" or "bottleneck".
      width: channels of the first stage (doubled at each later stage).
      stem: "cifar" (3x3 conv, stride 1, no pool) or "imagenet" (7x7 stride 2 + 3x3 max-pool).
      zero_init_residual: zero-init the last BN scale of each block (Goyal et al. 2017).
      dtype: compute dtype; parameters are always float32.
      conv_impl: how convolutions are computed (``jssl.models.conv.CONV_IMPLS``):
        "auto" (the CPU's backward pass in batch chunks, XLA's on accelerators),
        "xla", "im2col", "im2col_strided" or "chunked_grad". The parameters are
        the same for all.

    Call: ``x [B, H, W, C]`` float, ``train`` -> ``(features [B, feature_dim] float32,
    {"feature_map": [B, h, w, feature_dim] float32})``.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width: int = 64
    stem: str = "cifar"
    zero_init_residual: bool = False
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features."""
        return self.width * 2 ** (len(self.stage_sizes) - 1) * _BLOCKS[self.block].expansion

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, dict]:
        if self.block not in _BLOCKS:
            raise ValueError(f"Unknown ResNet block {self.block!r}; valid: {sorted(_BLOCKS)}.")
        if self.stem not in ("cifar", "imagenet"):
            raise ValueError(f"Unknown ResNet stem {self.stem!r}; valid: 'cifar', 'imagenet'.")
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images [B, H, W, C]; got shape {x.shape}.")
        block_cls = _BLOCKS[self.block]
        x = x.astype(self.dtype)
        if self.stem == "cifar":
            x = _conv(self.width, 3, 1, self.dtype, name="stem_conv", impl=self.conv_impl)(x)
            x = nn.relu(batch_norm(train, dtype=self.dtype, name="stem_bn")(x))
        else:
            x = _conv(self.width, 7, 2, self.dtype, name="stem_conv", impl=self.conv_impl)(x)
            x = nn.relu(batch_norm(train, dtype=self.dtype, name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = block_cls(
                    features=self.width * 2**i,
                    stride=2 if i > 0 and j == 0 else 1,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    conv_impl=self.conv_impl,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train=train)
        feature_map = x.astype(jnp.float32)
        features = jnp.mean(feature_map, axis=(1, 2))
        return features, {"feature_map": feature_map}
