"""MODELS registry (name -> backbone constructor) and parameter helpers."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from jssl.models.convnet import ConvNet
from jssl.models.resnet import ResNet
from jssl.models.vit import ViT

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "convnet": ConvNet,
    "vit_tiny": functools.partial(ViT, hidden=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_small": functools.partial(ViT, hidden=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_base": functools.partial(ViT, hidden=768, depth=12, num_heads=12, mlp_dim=3072),
}

# Parameters that are matrices but, as in DINO, are not weight-decayed.
_NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token"})


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds backbone ``name`` from MODELS; kwargs override its attributes."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.")
    return MODELS[name](**kwargs)


def _leaf_name(path: tuple) -> str:
    last = path[-1] if path else None
    return str(getattr(last, "key", getattr(last, "name", last)))


def weight_decay_mask(params: Any) -> Any:
    """Pytree of bools like ``params``: True for kernels and embeddings (ndim > 1).

    False for biases, BatchNorm/LayerNorm scales and biases (all 1-D), and for
    ``pos_embed`` and ``cls_token`` as DINO does. Use with ``optax.add_decayed_weights(mask=...)``.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.ndim > 1 and _leaf_name(path) not in _NO_DECAY_NAMES, params
    )


def count_params(params: Any) -> int:
    """Total number of scalars in a params pytree (works on ShapeDtypeStructs too)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
