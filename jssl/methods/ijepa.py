"""I-JEPA (Assran et al., 2023): from one context block of an image, predict the target
encoder's features of a few target blocks, in feature space; no augmentation but the crop.

- views: one random resized crop per image (I-JEPA: scale 0.3-1, no flip, no colour), and
  the multi-block masks of ``jssl.masks.multiblock_masks`` drawn from the view key: 4 target
  blocks of 15-20% of the patches (aspect 0.75-1.5, one size per batch), one context block
  of 85-100% outside them, ``min_keep`` 10, every context mask truncated to the smallest
  count of its group of ``ijepa.mask_group`` images (the official collator's values; its
  batch is one GPU's, 128 images);
- network: ``JEPANetwork``: the ViT encoder on the context patches only, the narrow ViT
  predictor (``ijepa.pred_*``) on the context tokens plus a mask token at each target
  position; the target encoder is the EMA of the encoder (``method_state["target"]``,
  momentum ``ijepa.target_momentum`` -> ``target_momentum_end`` linearly over the run, as
  the official ``momentum_scheduler``) on the whole image, no gradient;
- loss: ``losses.ijepa_loss``: smooth L1 between the predictions and the layer-normalised
  target features of the target blocks' tokens; with ``ijepa.target_standardise="position"``
  (not the official recipe; the digits preset's) the targets are first standardised per
  patch position and feature over the batch (``losses.standardise_by_position``), so that
  a target encoder whose features say only where a patch is gives nothing to predict;
- monitors: ``target_spread`` (collapse of the patches' features, warned under 0.1) and
  ``rankme``, the effective rank (``jssl.evaluation.rankme``) of the step's pooled target
  features, logged every step.

Evaluation pools the encoder's patch tokens of the whole image (I-JEPA's features; jssl's
ViT also carries a [CLS] token, which nothing trains here); the target encoder is
evaluated too (``teacher_knn``), and it is what pictures and export use by default.
``python -m jssl.visualize reconstructions`` draws the masks: the image, the context
(everything else grey) and the target blocks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import ema, losses, masks, pretext
from jssl.checks import MOMENTUM, WIDTH, Added, integer, one_of, pair
from jssl.evaluation.rank import rankme
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo
from jssl.models import create_model
from jssl.models.ijepa import JEPANetwork, JEPAPredictor


def build_model(config: ml_collections.ConfigDict) -> JEPANetwork:
    dtype = jnp.dtype(config.model.dtype)
    encoder = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    j = config.ijepa
    predictor = JEPAPredictor(
        hidden=j.pred_hidden,
        depth=j.pred_depth,
        num_heads=j.pred_num_heads,
        mlp_dim=j.pred_mlp_dim,
        dtype=dtype,
    )
    return JEPANetwork(encoder=encoder, predictor=predictor)


def grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
    side = config.augment.crop_size // config.model.kwargs.patch_size
    return side, side


def draw_masks(key: jax.Array, batch: int, config: ml_collections.ConfigDict) -> dict:
    """``jssl.masks.multiblock_masks`` of ``batch`` images with the ``ijepa`` block's values."""
    j = config.ijepa
    drawn = masks.multiblock_masks(
        key,
        batch,
        grid(config),
        num_targets=j.num_targets,
        target_scale=tuple(j.target_scale),
        target_aspect=tuple(j.target_aspect),
        context_scale=tuple(j.context_scale),
        min_keep=j.min_keep,
        group=j.mask_group,
    )
    return drawn._asdict()


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> dict:
    """{"image": [B, S, S, C] float32 in [0, 1], "context", "context_valid", "targets",
    "targets_valid"} (``jssl.masks.BlockMasks``)."""
    a = config.augment
    k_view, k_mask = jax.random.split(key)
    images = pretext.crop_flip_views(
        k_view, batch["image"], size=a.crop_size, scale=tuple(a.scale), flip=a.flip
    )
    return {"image": images, **draw_masks(k_mask, images.shape[0], config)}


def target_momentum_schedule(config: ml_collections.ConfigDict, run: RunInfo) -> optax.Schedule:
    j = config.ijepa
    return optax.linear_schedule(j.target_momentum, j.target_momentum_end, run.total_steps)


def init_method_state(params, batch_stats, config, run) -> dict:
    """The target encoder: a copy of the encoder."""
    teacher = ema.ema_teacher(target_momentum_schedule(config, run))
    return {"target": teacher.init({"encoder": params["encoder"]})}


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated encoder into the target encoder."""
    del step  # the EMA state counts its own updates
    teacher = ema.ema_teacher(target_momentum_schedule(config, run))
    target = teacher.update({"encoder": params["encoder"]}, method_state["target"])
    return params, {"target": target}


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    momentum = target_momentum_schedule(config, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # the masks are in the views
        x = views["image"]
        target = jax.lax.stop_gradient(method_state["target"])
        features = model.apply(
            {"params": {**params, **target.params}}, x, train=True, method=JEPANetwork.targets
        )
        pred = model.apply(
            {"params": params},
            x,
            views["context"],
            views["context_valid"],
            views["targets"],
            views["targets_valid"],
            train=True,
            method=JEPANetwork.predict,
        )
        targets = features
        if config.ijepa.get("target_standardise", "none") == "position":
            targets = losses.standardise_by_position(features)
        loss = losses.ijepa_loss(pred, targets, views["targets"], valid=views["targets_valid"])
        num = features.shape[1]
        metrics = {
            "context_share": jnp.sum(views["context_valid"][0]) / num,
            # the first image's kept patches: its context; its target blocks (overlaps counted)
            "target_share": jnp.sum(views["targets_valid"][:, 0]) / num,
            "pred_std": jnp.mean(jnp.std(pred, axis=(1, 2))),
            # std over every patch of every image of the layer-normalised targets: ~1 when
            # patches differ, 0 when all are the same
            "target_spread": jnp.mean(jnp.std(jax.nn.standardize(features, axis=-1), (0, 1))),
            # the effective rank of the batch's evaluation features (the target encoder's
            # pooled patch tokens): it falls as they collapse onto a few directions
            "rankme": rankme(jnp.mean(features, axis=1)),
            "target_momentum": momentum(target.count),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


SPREAD_FLOOR = 0.1
STANDARDISE = ("none", "position")


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    """I-JEPA's collapse: the target encoder gives every patch of every image the same
    (layer-normalised) features, which the predictor then matches for a loss near 0."""
    spread = metrics.get("target_spread")
    if spread is not None and spread < SPREAD_FLOOR:
        return [
            f"target_spread {spread:.3f} < {SPREAD_FLOOR}: the target encoder gives every patch "
            "nearly the same features (collapse); lower the learning rate, raise "
            "ijepa.target_momentum or set ijepa.target_standardise=position"
        ]
    return []


def _smallest_target(values: dict, side: int) -> int:
    """The smallest h * w of a target block over the scale and aspect ranges."""
    r = jnp.linspace(0.0, 1.0, 1001)
    h, w = masks.block_size(
        r, (side, side), values["ijepa.target_scale"], values["ijepa.target_aspect"]
    )
    return int(jnp.min(h * w))


def check(values: dict) -> list[str]:
    out = []
    model, patch = values.get("model.name"), values.get("model.patch_size")
    if model is not None and patch is None:
        return [
            f"model.name={model!r}: I-JEPA's encoder runs on the context patch tokens; use a "
            "ViT (vit_tiny, vit_small, vit_base), as configs/ijepa.py does"
        ]
    crop = values.get("augment.crop_size")
    if patch is not None and crop is not None:
        side = crop // patch
        if crop % patch or side < 2:
            return [
                f"augment.crop_size={crop}: I-JEPA's masks need a grid of at least 2 x 2 "
                f"whole patches of patch_size={patch}; use a multiple of {patch}, at least "
                f"{2 * patch}"
            ]
        need = ("ijepa.target_scale", "ijepa.target_aspect", "ijepa.min_keep")
        if all(values.get(k) is not None for k in need):
            smallest = _smallest_target(values, side)
            if smallest <= values["ijepa.min_keep"]:
                out.append(
                    f"ijepa.min_keep={values['ijepa.min_keep']}: the smallest target block of "
                    f"the {side} x {side} grid has {smallest} patches, and a block must keep "
                    f"more than min_keep (the official sampler would never finish); use "
                    f"min_keep < {smallest} or larger target blocks"
                )
    hidden, heads = values.get("ijepa.pred_hidden"), values.get("ijepa.pred_num_heads")
    if hidden is not None and heads is not None and hidden % heads:
        out.append(
            f"ijepa.pred_num_heads={heads}: the predictor width pred_hidden={hidden} is not "
            f"divisible by it; use a divisor of {hidden}"
        )
    if hidden is not None and hidden % 4:
        out.append(
            f"ijepa.pred_hidden={hidden}: the predictor's sine-cosine position embeddings "
            "need a width divisible by 4; use a multiple of 4"
        )
    return out


def picture_rows(model, variables, images, x: jax.Array, key: jax.Array, config) -> list:
    """The masks of a batch: the image, its context block (the rest grey) and its target
    blocks (the rest grey)."""
    p = config.model.kwargs.patch_size
    g = (x.shape[1] // p, x.shape[2] // p)
    drawn = draw_masks(key, x.shape[0], config)

    def shown(index, valid):  # [N, K] -> [N, H, W, 1] in {0, 1}
        cells = jnp.zeros((x.shape[0], g[0] * g[1]), bool)
        cells = jax.vmap(lambda c, i, v: c.at[i].max(v))(cells, index, valid)
        cells = cells.reshape(-1, g[0], g[1]).repeat(p, axis=1).repeat(p, axis=2)
        return cells[..., None]

    context = shown(drawn["context"], drawn["context_valid"])
    targets = jnp.any(
        jnp.stack(
            [shown(i, v) for i, v in zip(drawn["targets"], drawn["targets_valid"], strict=True)]
        ),
        0,
    )
    return [x, jnp.where(context, x, 0.5), jnp.where(targets, x, 0.5)]


IJEPA = Method(
    name="ijepa",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    picture_rows=picture_rows,
    evaluators=("knn", "linear_probe", "kmeans", "teacher_knn", "rankme", "lidar"),
    teacher="target",
    fields={
        **parts.CROP_FLIP_FIELDS,
        "ijepa.num_targets": integer(1, 64),
        "ijepa.target_scale": pair(),
        "ijepa.target_aspect": pair(0.0, 100.0),
        "ijepa.context_scale": pair(),
        "ijepa.min_keep": integer(0, 1 << 20),
        "ijepa.mask_group": integer(1, 1 << 30),
        "ijepa.pred_hidden": WIDTH,
        "ijepa.pred_depth": integer(1, 256),
        "ijepa.pred_num_heads": integer(1, 1024),
        "ijepa.pred_mlp_dim": WIDTH,
        "ijepa.target_momentum": MOMENTUM,
        "ijepa.target_momentum_end": MOMENTUM,
        "ijepa.target_standardise": Added(one_of(STANDARDISE, "ijepa.target_standardise"), "none"),
    },
    check=check,
)
