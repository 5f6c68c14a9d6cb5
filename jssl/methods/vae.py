"""Variational autoencoder (Kingma & Welling 2014).

Encoder: backbone -> pooled h -> Dense -> (mean, log variance) of a diagonal
Gaussian q(z|x) over ``latent_dim`` dimensions; z = mean + sigma * eps
(reparameterisation, eps drawn in the loss from the step key and passed in, so
the model holds no hidden randomness). Decoder: Dense -> seed map -> Decoder ->
the mean of a Gaussian p(x|z) with one scale sigma for all pixels: by default
the maximum-likelihood sigma^2 = batch MSE (``vae.scale="optimal"``, the
calibrated decoder of Rybkin et al. 2021: without it a learned scale moves so
slowly that the KL term dominates early and most latents collapse), or a
learned log-scale (``vae.scale="learned"``). Prior
p(z) = N(0, I).

The loss is -ELBO = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z)) (one sample),
divided by the number of pixel dimensions D = H*W*C: nats per dimension. The
density is of pixels scaled to [0, 1] and is continuous (no dequantisation), so
the number can be negative and is not comparable to the bits/dim of 8-bit
likelihood papers; subtract ln(1/256) = -5.545 nats/dim for the density of the
0..255 scale. ``active_latents`` (latent dimensions whose average KL exceeds
0.01 nats) watches for posterior collapse.

Pictures of a trained run (test images, reconstructions, samples from the
prior): ``python -m jssl.visualize reconstructions --workdir=W``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jssl import losses
from jssl.checks import MAX_SIDE, NON_NEGATIVE, WIDTH, integer, numbers, one_of
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import Method
from jssl.models import VAE, create_model


def build_model(config: ml_collections.ConfigDict) -> VAE:
    dtype = jnp.dtype(config.model.dtype)
    vc = config.vae
    return VAE(
        backbone=create_model(config.model.name, dtype=dtype, **config.model.kwargs),
        decoder=parts.build_decoder(config),
        latent_dim=vc.latent_dim,
        seed_shape=tuple(vc.seed_shape),
        dtype=dtype,
    )


def elbo_terms(x, recon, log_scale, mean, log_var) -> dict[str, jax.Array]:
    """Per-example reconstruction NLL and KL in nats, and their sum per dimension."""
    nll = losses.gaussian_nll(x, recon, log_scale)  # [B]
    kl = losses.gaussian_kl(mean, log_var)  # [B]
    dims = float(np.prod(x.shape[1:]))
    return {"nll": nll, "kl": kl, "neg_elbo_per_dim": (nll + kl) / dims, "dims": dims}


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    vc = config.vae

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x = views
        eps = jax.random.normal(key, (x.shape[0], vc.latent_dim))
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
            (recon, aux), updated = model.apply(
                variables, x, train=True, eps=eps, mutable=["batch_stats"]
            )
            batch_stats = updated["batch_stats"]
        else:
            recon, aux = model.apply(variables, x, train=True, eps=eps)
        if vc.scale == "optimal":  # argmin_sigma of the NLL: sigma^2 = MSE (floored)
            log_scale = 0.5 * jnp.log(jnp.maximum(losses.masked_mse(recon, x), 1e-6))
        elif vc.scale == "learned":
            log_scale = aux["log_scale"]
        else:
            raise UserError(f"Unknown vae.scale {vc.scale!r}; valid: 'optimal', 'learned'.")
        t = elbo_terms(x, recon, log_scale, aux["mean"], aux["log_var"])
        loss = jnp.mean(t["nll"] + vc.beta * t["kl"]) / t["dims"]
        kl_per_latent = 0.5 * jnp.mean(
            jnp.exp(aux["log_var"]) + jnp.square(aux["mean"]) - 1.0 - aux["log_var"], axis=0
        )
        metrics = {
            "neg_elbo_nats_per_dim": jnp.mean(t["neg_elbo_per_dim"]),
            "recon_nats_per_dim": jnp.mean(t["nll"]) / t["dims"],
            "kl_nats_per_dim": jnp.mean(t["kl"]) / t["dims"],
            "kl_nats": jnp.mean(t["kl"]),
            "active_latents": jnp.sum(kl_per_latent > 0.01).astype(jnp.float32),
            "recon_mse": losses.masked_mse(recon, x),
            "sigma": jnp.exp(log_scale),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    if metrics.get("active_latents", 1.0) == 0:
        return ["no latent dimension carries information (KL ~ 0): posterior collapse"]
    return []


def picture_rows(model, variables, images, x, key, config) -> list:
    """Test images, their reconstructions, and two rows of samples from the prior."""
    num = x.shape[0]
    recon, _ = model.apply(variables, x, train=False)
    z = jax.random.normal(key, (2 * num, config.vae.latent_dim))
    samples = model.apply(variables, z, out_shape=x.shape[1:], train=False, method=VAE.decode)
    return [x, recon, samples[:num], samples[num:]]


VAE_METHOD = Method(
    name="vae",
    build_model=build_model,
    make_views=parts.clean_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.CROP_FLIP_FIELDS,
        **parts.DECODER_FIELDS,
        "vae.latent_dim": WIDTH,
        "vae.seed_shape": numbers(integer(1, MAX_SIDE), length=3),
        "vae.beta": NON_NEGATIVE,
        "vae.scale": one_of(("optimal", "learned"), "vae.scale"),
    },
    picture_rows=picture_rows,
)
