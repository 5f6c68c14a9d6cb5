"""Recovery pretext tasks: an encoder-decoder restores what a corruption removed.

- denoising (Vincent et al. 2008): Gaussian or salt-and-pepper noise in, clean image out;
- inpainting (Pathak et al. 2016): a central or random block is filled with a
  constant, and the L2 loss counts only the hidden region (the paper's
  adversarial term is not used);
- colorization (Zhang et al. 2016): the L channel of CIE Lab in, ab out, as
  regression on ab/110 or as classification over the in-gamut quantised ab bins
  with soft targets and class rebalancing. The rebalancing prior (the bins'
  empirical frequencies) is an EMA over the training batches kept in the
  method state, so it is checkpointed and needs no pass over the data set.

Evaluation uses the encoder's pooled features of the *clean* image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import augment, losses, pretext
from jssl.checks import (
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    boolean,
    integer,
    one_of,
    real,
)
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderDecoder

AB_SCALE = 110.0  # |a|, |b| of sRGB colours stay below ~110 (regression targets ab / 110)


def corruption_rows(make_views):
    """picture_rows of a method that undoes a corruption: corrupted, output, original."""

    def picture_rows(model, variables, images, x, key, config) -> list:
        corrupted, clean = make_views(key, {"image": jnp.asarray(images)}, config)
        return [corrupted, model.apply(variables, corrupted, train=False)[0], clean]

    return picture_rows


# ----------------------------------------------------------------------------- denoising

NOISES = ("gaussian", "salt_and_pepper")


def denoising_views(key, batch, config):
    """(noisy [B, S, S, C], clean [B, S, S, C])."""
    dc = config.denoising
    if dc.noise not in NOISES:
        raise UserError(f"Unknown denoising.noise {dc.noise!r}; valid: {', '.join(NOISES)}.")
    k_view, k_noise = jax.random.split(key)
    clean = parts.clean_views(k_view, batch, config)
    keys = jax.random.split(k_noise, clean.shape[0])
    if dc.noise == "gaussian":
        noisy = jax.vmap(lambda k, x: pretext.gaussian_noise(k, x, std=dc.std))(keys, clean)
    else:
        noisy = jax.vmap(lambda k, x: pretext.salt_and_pepper(k, x, amount=dc.amount))(keys, clean)
    return noisy, clean


def denoising_loss(model, config, run=None):
    def loss_fn(params, batch_stats, views, method_state, step, key):
        noisy, clean = views
        recon, aux, batch_stats = apply_train(model, params, batch_stats, noisy)
        loss = losses.masked_mse(recon, clean)
        metrics = {
            "noisy_mse": losses.masked_mse(noisy, clean),  # the do-nothing baseline
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def build_image_decoder_model(config):
    return EncoderDecoder(backbone=parts.backbone(config), decoder=parts.build_decoder(config))


DENOISING = Method(
    name="denoising",
    build_model=build_image_decoder_model,
    make_views=denoising_views,
    make_loss=denoising_loss,
    fields={
        **parts.CROP_FLIP_FIELDS,
        **parts.DECODER_FIELDS,
        "denoising.noise": one_of(tuple(NOISES), "denoising.noise"),
        "denoising.std": NON_NEGATIVE,
        "denoising.amount": PROBABILITY,
    },
    picture_rows=corruption_rows(denoising_views),
)

# ----------------------------------------------------------------------------- inpainting


def inpainting_views(key, batch, config):
    """(masked input [B, S, S, C], clean [B, S, S, C], mask [B, S, S, 1] bool)."""
    ic = config.inpainting
    k_view, k_mask = jax.random.split(key)
    clean = parts.clean_views(k_view, batch, config)
    s = clean.shape[1]
    keys = jax.random.split(k_mask, clean.shape[0])
    masks = jax.vmap(
        lambda k: pretext.block_mask(k, s, s, area=ic.area, kind=ic.mask, num_blocks=ic.num_blocks)
    )(keys)
    masked = jnp.where(masks, ic.fill, clean)
    return masked, clean, masks


def inpainting_loss(model, config, run=None):
    outside = config.inpainting.unmasked_weight

    def loss_fn(params, batch_stats, views, method_state, step, key):
        masked, clean, masks = views
        recon, aux, batch_stats = apply_train(model, params, batch_stats, masked)
        hidden = losses.masked_mse(recon, clean, masks)
        visible = losses.masked_mse(recon, clean, ~masks)
        loss = hidden + outside * visible if outside else hidden
        metrics = {
            "masked_mse": hidden,
            "visible_mse": visible,
            "fill_mse": losses.masked_mse(masked, clean, masks),  # the do-nothing baseline
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


INPAINTING = Method(
    name="inpainting",
    build_model=build_image_decoder_model,
    make_views=inpainting_views,
    make_loss=inpainting_loss,
    fields={
        **parts.CROP_FLIP_FIELDS,
        **parts.DECODER_FIELDS,
        "inpainting.mask": one_of(("center", "random"), "inpainting.mask"),
        "inpainting.area": real(0.0, 1.0, lo_open=True, hi_open=True),
        "inpainting.num_blocks": integer(1, 1024),
        "inpainting.fill": PROBABILITY,
        "inpainting.unmasked_weight": NON_NEGATIVE,
    },
    picture_rows=corruption_rows(inpainting_views),
)

# ----------------------------------------------------------------------------- colorization

TARGETS = ("regression", "classification")


def _num_bins(config) -> int:
    return len(pretext.ab_bins(config.colorization.bin_size))


def build_colorization_model(config):
    cc = config.colorization
    if cc.target not in TARGETS:
        raise UserError(f"Unknown colorization.target {cc.target!r}; valid: {', '.join(TARGETS)}.")
    out = 2 if cc.target == "regression" else _num_bins(config)
    return EncoderDecoder(
        backbone=parts.backbone(config),
        decoder=parts.build_decoder(config),
        out_channels=out,
        lightness_input=True,
    )


def init_colorization_state(params, batch_stats, config, run=None):
    if config.colorization.target != "classification":
        return {}
    q = _num_bins(config)
    return {"ab_prior": jnp.full((q,), 1.0 / q, jnp.float32)}


def rebalancing_weights(prior: jax.Array, *, mix: float) -> jax.Array:
    """Zhang's class weights w ∝ ((1 - mix) p + mix / Q)^-1, scaled so sum_q p_q w_q = 1."""
    q = prior.shape[0]
    w = 1.0 / ((1.0 - mix) * prior + mix / q)
    return w / jnp.sum(prior * w)


def colorization_loss(model, config, run=None):
    cc = config.colorization

    def loss_fn(params, batch_stats, views, method_state, step, key):
        rgb = views
        out, aux, batch_stats = apply_train(model, params, batch_stats, rgb)
        ab = pretext.rgb_to_lab(rgb)[..., 1:]
        metrics = {"h_std": losses.embedding_std(aux["features"])}
        if cc.target == "regression":
            loss = losses.masked_mse(out, ab / AB_SCALE)
            metrics["ab_rmse"] = jnp.sqrt(losses.masked_mse(out * AB_SCALE, ab))
            return loss, (batch_stats, method_state, metrics)
        centres = jnp.asarray(pretext.ab_bins(cc.bin_size))
        targets = pretext.soft_encode_ab(ab, centres, sigma=cc.soft_sigma)  # [B, H, W, Q]
        prior = method_state["ab_prior"]
        batch_freq = jnp.mean(targets, axis=(0, 1, 2))
        new_prior = cc.prior_momentum * prior + (1.0 - cc.prior_momentum) * batch_freq
        weights = None
        if cc.rebalance:
            w = rebalancing_weights(jax.lax.stop_gradient(prior), mix=cc.rebalance_mix)
            weights = w[jnp.argmax(targets, axis=-1)]
        loss = losses.soft_cross_entropy(out, targets, weights=weights)
        decoded = pretext.annealed_mean_ab(out, centres, temperature=cc.decode_temperature)
        metrics["bin_acc"] = jnp.mean(
            (jnp.argmax(out, -1) == jnp.argmax(targets, -1)).astype(jnp.float32)
        )
        metrics["ab_rmse"] = jnp.sqrt(losses.masked_mse(decoded, ab))
        return loss, (batch_stats, {"ab_prior": new_prior}, metrics)

    return loss_fn


def colorization_rows(model, variables, images, x, key, config) -> list:
    """The grey input, the colourised output, the original."""
    gray = jnp.broadcast_to(augment.rgb_to_grayscale(x), x.shape)
    return [gray, colorize(model, variables, x, config), x]


COLORIZATION = Method(
    name="colorization",
    build_model=build_colorization_model,
    make_views=parts.clean_views,  # RGB crops; the model takes their L channel itself
    make_loss=colorization_loss,
    init_method_state=init_colorization_state,
    fields={
        **parts.CROP_FLIP_FIELDS,
        **parts.DECODER_FIELDS,
        "colorization.target": one_of(tuple(TARGETS), "colorization.target"),
        "colorization.bin_size": integer(1, 100),
        "colorization.soft_sigma": POSITIVE,
        "colorization.rebalance": boolean,
        "colorization.rebalance_mix": PROBABILITY,
        "colorization.prior_momentum": MOMENTUM,
        "colorization.decode_temperature": POSITIVE,
    },
    picture_rows=colorization_rows,
)


def colorize(model, variables, images: jax.Array, config) -> jax.Array:
    """Predicted RGB [B, H, W, 3] of images [B, H, W, C] in [0, 1]: their L with predicted ab."""
    out, _ = model.apply(variables, images, train=False)
    cc = config.colorization
    if cc.target == "regression":
        ab = out * AB_SCALE
    else:
        centres = jnp.asarray(pretext.ab_bins(cc.bin_size))
        ab = pretext.annealed_mean_ab(out, centres, temperature=cc.decode_temperature)
    lum = pretext.rgb_to_lab(images)[..., :1]
    return pretext.lab_to_rgb(jnp.concatenate([lum, ab], axis=-1))
