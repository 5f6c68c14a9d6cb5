"""Denoising autoencoder configs: ``--config=configs/denoising.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. ``--config.denoising.noise=salt_and_pepper`` switches the noise.
"""

import ml_collections

from configs import common


def decoder_block() -> ml_collections.ConfigDict:
    """The Decoder's settings (shared by the recovery, bottleneck and VAE configs)."""
    return ml_collections.ConfigDict(
        {"upsample": "nearest", "widths": (), "min_width": 16, "use_bn": True}
    )


def apply_recovery_preset(c: ml_collections.ConfigDict, preset: str) -> None:
    """Optimisation for the encoder-decoder methods (denoising, inpainting, colorization)."""
    c.augment.scale = (0.5, 1.0) if preset == "digits" else (0.25, 1.0)
    if preset == "digits":
        c.num_epochs = 30.0
        c.optim.name = "adamw"
        c.optim.learning_rate = 2e-3
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 2.0
        c.eval.probe_epochs = 200
    else:
        c.num_epochs = {"imagenet": 30.0}.get(preset, 200.0)
        c.optim.name = "adamw"
        c.optim.learning_rate = 1e-3
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 2.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("denoising")
    common.apply_data_preset(c, preset)
    c.decoder = decoder_block()
    c.denoising = ml_collections.ConfigDict()
    c.denoising.noise = "gaussian"  # gaussian | salt_and_pepper
    c.denoising.std = 0.3  # gaussian noise std (pixels in [0, 1]), clipped to [0, 1]
    c.denoising.amount = 0.25  # salt-and-pepper: fraction of pixels set to 0 or 1
    apply_recovery_preset(c, preset)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
