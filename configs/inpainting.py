"""Inpainting configs (Pathak et al. 2016): ``--config=configs/inpainting.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. ``--config.inpainting.mask=random`` for random blocks.
"""

import ml_collections

from configs import common
from configs.denoising import apply_recovery_preset, decoder_block


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("inpainting")
    common.apply_data_preset(c, preset)
    c.decoder = decoder_block()
    c.inpainting = ml_collections.ConfigDict()
    c.inpainting.mask = "center"  # center | random
    c.inpainting.area = 0.25  # hidden fraction of the image (Pathak: a quarter)
    c.inpainting.num_blocks = 1  # random masks: blocks of area / num_blocks each
    c.inpainting.fill = 0.5  # value written into the hidden region
    c.inpainting.unmasked_weight = 0.0  # > 0 also reconstructs the visible pixels
    apply_recovery_preset(c, preset)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
