"""What a method is: a few pure functions plugged into the one generic train step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

PyTree = Any
# loss(params, batch_stats, views, method_state, step, key)
#   -> (loss, (new_batch_stats, new_method_state, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[PyTree, PyTree, dict]]]


@dataclasses.dataclass(frozen=True)
class Method:
    """A self-supervised method as data: no method owns a train loop.

    Attributes:
      name: registry name.
      build_model: config -> Flax module whose ``__call__(x, *, train)`` returns
        ``(outputs, aux)`` with ``aux["features"]`` the representation used by
        evaluation.
      make_views: (key, images uint8 [B, H, W, C], config) -> the views the loss
        needs (runs on device inside the jitted step).
      make_loss: (model, config) -> LossFn.
      init_method_state: (params, config) -> method state pytree (DINO centre,
        teacher, SeLa labels...); ``{}`` when the method has none.
      after_update: optional (new params, method_state, step, config) ->
        method_state, e.g. an EMA teacher update.
    """

    name: str
    build_model: Callable[[ml_collections.ConfigDict], nn.Module]
    make_views: Callable[[jax.Array, jax.Array, ml_collections.ConfigDict], PyTree]
    make_loss: Callable[[nn.Module, ml_collections.ConfigDict], LossFn]
    init_method_state: Callable[[PyTree, ml_collections.ConfigDict], PyTree] = (
        lambda params, config: {}
    )
    after_update: Callable[..., PyTree] | None = None


class EncoderWithHead(nn.Module):
    """backbone -> head; ``aux["features"]`` is the backbone's pooled output h."""

    backbone: nn.Module
    head: nn.Module

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        h, aux = self.backbone(x, train=train)
        z = self.head(h, train=train)
        return z, {**aux, "features": h}


def apply_train(model: nn.Module, params, batch_stats, x: jax.Array):
    """Forward pass in training mode; returns (outputs, aux, new_batch_stats)."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
        (out, aux), updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, aux, updated["batch_stats"]
    out, aux = model.apply(variables, x, train=True)
    return out, aux, batch_stats
