"""Variational autoencoder configs: ``--config=configs/vae.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. Pictures of a trained run:
``python -m jssl.visualize reconstructions --workdir=W``.
"""

import ml_collections

from configs import common
from configs.denoising import apply_recovery_preset, decoder_block

# preset -> the decoder's seed map (h, w, C) that the latent is projected to.
SEED_SHAPE = {
    "digits": (4, 4, 64),
    "cifar10": (4, 4, 256),
    "cifar10_folder": (4, 4, 256),
    "stl10": (6, 6, 256),
    "imagenet": (7, 7, 512),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("vae")
    common.apply_data_preset(c, preset)
    c.decoder = decoder_block()
    c.vae = ml_collections.ConfigDict()
    c.vae.latent_dim = 16 if preset == "digits" else 128
    c.vae.seed_shape = SEED_SHAPE[preset]
    c.vae.beta = 1.0  # weight of the KL term (1 = the ELBO)
    c.vae.scale = "optimal"  # p(x|z) scale: optimal (sigma^2 = batch MSE) | learned
    apply_recovery_preset(c, preset)
    c.augment.scale = (0.7, 1.0) if preset == "digits" else (0.5, 1.0)  # mostly whole images
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
