"""What a method is: a few pure functions plugged into the one generic train step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jssl import losses

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
      make_views: (key, batch, config) -> the views the loss needs (runs on
        device inside the jitted step); batch["image"] is uint8 [B, H, W, C].
      make_loss: (model, config) -> LossFn.
      init_method_state: (params, config) -> method state pytree (DINO centre,
        teacher, SeLa labels...); ``{}`` when the method has none.
      after_update: optional, inside the jitted step after the optimiser:
        (new params, new batch_stats, method_state, step, config) -> method_state,
        e.g. an EMA teacher update.
      prepare: optional host-side hook run once when an Experiment is built
        (after the data is loaded): (experiment) -> None; may store arrays on
        the experiment (e.g. SCAN's mined neighbours) and use
        ``experiment.workdir`` (None without a run folder).
      post_init: optional host-side (experiment, fresh state) -> state, run at
        the end of ``Experiment.init_state`` for what the jitted init cannot see
        (SeLa's labels have one row per training example; SCAN's backbone comes
        from a pretext checkpoint). A resumed run restores into this layout.
        ``experiment.restore_only`` is True when only a checkpoint's layout is
        wanted.
      batch_extras: optional host-side (experiment, indices [B], step) -> dict of
        extra per-example arrays for the batch (e.g. neighbour images, drawn
        from (seed, step)). Every batch already holds "image" [B, H, W, C]
        uint8 and "index" [B] int32.
      host_update: optional host-side (experiment, state) -> state, called after
        every step (keep it cheap unless due, e.g. SeLa's periodic relabelling).
      collapse_warnings: optional (logged metrics, config) -> list of warning
        strings, checked at every logging interval.
      make_optimizer: optional (config, total_steps, steps_per_epoch) ->
        (optax transformation, learning-rate schedule), replacing
        jssl.optim.make_optimizer (e.g. DINO's weight-decay schedule).
      extra_eval: optional host-side (experiment, state) -> dict of extra
        evaluation figures (e.g. a clustering head's ACC/NMI/ARI), merged
        into the evaluation results.
    """

    name: str
    build_model: Callable[[ml_collections.ConfigDict], nn.Module]
    make_views: Callable[[jax.Array, jax.Array, ml_collections.ConfigDict], PyTree]
    make_loss: Callable[[nn.Module, ml_collections.ConfigDict], LossFn]
    init_method_state: Callable[[PyTree, ml_collections.ConfigDict], PyTree] = (
        lambda params, config: {}
    )
    after_update: Callable[..., PyTree] | None = None
    prepare: Callable[[Any], None] | None = None
    post_init: Callable[[Any, Any], Any] | None = None
    batch_extras: Callable[[Any, Any, int], dict] | None = None
    host_update: Callable[[Any, Any], Any] | None = None
    collapse_warnings: Callable[[dict, ml_collections.ConfigDict], list[str]] | None = None
    make_optimizer: Callable[..., tuple[Any, Any]] | None = None
    extra_eval: Callable[[Any, Any], dict] | None = None


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


def classification_loss(model: nn.Module, accuracy_name: str) -> LossFn:
    """LossFn for pretext tasks whose views are (inputs, labels): cross-entropy on the logits.

    Logs ``accuracy_name`` (top-1 on the pretext labels) and ``h_std``, the
    collapse monitor on the backbone features ``aux["features"]``.
    """

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x, labels = views
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)
        metrics = {
            accuracy_name: losses.top1_accuracy(logits, labels),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return losses.classification_loss(logits, labels), (batch_stats, method_state, metrics)

    return loss_fn
