"""Variational autoencoder (Kingma & Welling 2014), and a command that draws pictures
of the decoder-based methods.

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

    python -m jssl.methods.vae --workdir=W [--out=W/pictures.png] [--num=10]

writes a PNG of a trained run of any decoder method: for vae, test images,
their reconstructions and samples from the prior; for autoencoder, images and
reconstructions; for denoising / inpainting / colorization, the corrupted
input, the output and the original.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jssl import losses
from jssl.errors import UserError
from jssl.methods.base import Method
from jssl.methods.recovery import build_decoder, clean_views
from jssl.models import VAE, create_model


def build_model(config: ml_collections.ConfigDict) -> VAE:
    dtype = jnp.dtype(config.model.dtype)
    vc = config.vae
    return VAE(
        backbone=create_model(config.model.name, dtype=dtype, **config.model.kwargs),
        decoder=build_decoder(config),
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


def make_loss(model, config: ml_collections.ConfigDict):
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


VAE_METHOD = Method(
    name="vae",
    build_model=build_model,
    make_views=clean_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
)


# ----------------------------------------------------------------------------- pictures


def image_grid(rows: list[np.ndarray], *, gap: int = 1) -> np.ndarray:
    """Rows of float images [N, H, W, C] in [0, 1] -> one uint8 [R*(H+gap)+gap, ..., 3] picture."""
    n, h, w, _ = rows[0].shape
    grid = np.ones((len(rows) * (h + gap) + gap, n * (w + gap) + gap, 3), np.float32)
    for r, row in enumerate(rows):
        row = np.clip(np.asarray(row, np.float32), 0.0, 1.0)
        if row.shape[-1] == 1:
            row = np.repeat(row, 3, axis=-1)
        for i in range(n):
            y, x = gap + r * (h + gap), gap + i * (w + gap)
            grid[y : y + h, x : x + w] = row[i]
    return np.rint(grid * 255).astype(np.uint8)


def picture_rows(exp, state, *, num: int = 10, seed: int = 0) -> list[np.ndarray]:
    """The rows of the picture of a trained decoder method (see the module docstring)."""
    from jssl import augment
    from jssl.methods.recovery import colorize

    config, model = exp.config, exp.model
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    size = config.augment.crop_size
    x = augment.eval_view(jnp.asarray(exp.dataset.test.images[:num]), size=(size, size))
    key = jax.random.PRNGKey(seed)
    method = config.method
    if method == "vae":
        recon, _ = model.apply(variables, x, train=False)
        z = jax.random.normal(key, (2 * num, config.vae.latent_dim))
        samples = model.apply(variables, z, out_shape=x.shape[1:], train=False, method=VAE.decode)
        return [x, recon, samples[:num], samples[num:]]
    if method == "autoencoder":
        return [x, model.apply(variables, x, train=False)[0]]
    if method == "colorization":
        gray = jnp.broadcast_to(augment.rgb_to_grayscale(x), x.shape)
        return [gray, colorize(model, variables, x, config), x]
    if method in ("denoising", "inpainting"):
        views = exp.method.make_views(key, {"image": exp.dataset.test.images[:num]}, config)
        corrupted = views[0]
        return [corrupted, model.apply(variables, corrupted, train=False)[0], views[1]]
    raise UserError(
        f"No picture for method {method!r}; supported: vae, autoencoder, colorization, "
        "denoising, inpainting."
    )


def write_picture(workdir: str, out: str | None = None, *, num: int = 10, scale: int = 4) -> str:
    """Writes the PNG of a run's latest checkpoint; returns its path."""
    from PIL import Image

    from jssl.visualize import load_run

    exp, state = load_run(workdir)
    grid = image_grid([np.asarray(r) for r in picture_rows(exp, state, num=num)])
    out = out or os.path.join(workdir, "pictures.png")
    img = Image.fromarray(grid)
    img.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from jssl.checkpoint import CheckpointError

    parser = argparse.ArgumentParser(prog="python -m jssl.methods.vae", description=__doc__)
    parser.add_argument("--workdir", required=True, help="run folder of a trained decoder method")
    parser.add_argument("--out", default=None, help="PNG path (default: WORKDIR/pictures.png)")
    parser.add_argument("--num", type=int, default=10, help="images per row")
    parser.add_argument("--scale", type=int, default=4, help="pixel magnification")
    args = parser.parse_args(argv)
    try:
        path = write_picture(args.workdir, args.out, num=args.num, scale=args.scale)
    except (UserError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
