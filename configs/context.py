"""Context prediction configs (Doersch et al. 2015): ``--config=configs/context.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. Each example is cropped and resized to ``context.image_size``,
which must hold 3 * patch_size + 2 * gap + 2 * jitter pixels. The backbone is
evaluated on whole ``augment.crop_size`` images.
"""

import ml_collections

from configs import common

# preset -> (image size, patch size, gap, jitter); Doersch: 96 px patches, gap 48, jitter 7.
GEOMETRY = {
    "digits": (24, 6, 2, 1),
    "cifar10": (32, 8, 3, 1),
    "cifar10_folder": (32, 8, 3, 1),
    "stl10": (96, 24, 6, 3),
    "imagenet": (224, 56, 12, 7),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("context")
    common.apply_data_preset(c, preset)
    c.context = ml_collections.ConfigDict()
    geometry = GEOMETRY[preset]
    c.context.image_size, c.context.patch_size, c.context.gap, c.context.jitter = geometry
    c.context.scale = (0.6, 1.0)  # crop area before placing the patches
    c.context.colour_drop_p = 0.0 if preset == "digits" else 0.5  # no-op on grayscale
    c.context.gray_p = 0.0
    c.context.standardize = True
    c.context.patch_dim = 128  # shared per-patch embedding before concatenation
    c.context.hidden_dim = 256
    # digits: batch 128 x 2 patches through the backbone
    common.parts_task_schedule(c, preset, digits_batch_size=128, digits_epochs=30.0)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
