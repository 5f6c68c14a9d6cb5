"""Jigsaw configs (Noroozi & Favaro 2016): ``--config=configs/jigsaw.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. Each example is cropped and resized to ``jigsaw.image_size``
(3 cells per side), one ``tile_size`` tile is cut from each cell at a random
offset, and the tiles are shuffled by one of ``num_permutations`` permutations.
The backbone is evaluated on whole ``augment.crop_size`` images.
"""

import ml_collections

from configs import common

# preset -> (jigsaw image size, tile size): tile / cell close to Noroozi's 64 / 75.
GEOMETRY = {
    "digits": (24, 6),
    "cifar10": (32, 8),
    "cifar10_folder": (32, 8),
    "stl10": (96, 27),
    "imagenet": (225, 64),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("jigsaw")
    common.apply_data_preset(c, preset)
    c.jigsaw = ml_collections.ConfigDict()
    c.jigsaw.grid = 3
    c.jigsaw.num_permutations = 100  # P (Noroozi: 100 or 1000)
    c.jigsaw.perm_seed = 0  # seed of the greedy permutation search
    c.jigsaw.image_size, c.jigsaw.tile_size = GEOMETRY[preset]
    c.jigsaw.scale = (0.6, 1.0)  # crop area before cutting the grid
    c.jigsaw.jitter = True  # random tile offsets inside their cells
    c.jigsaw.gray_p = 0.0 if preset == "digits" else 0.3  # against chromatic shortcuts
    c.jigsaw.standardize = True  # per-input zero mean, unit variance
    c.jigsaw.tile_dim = 64  # shared per-tile embedding before concatenation
    c.jigsaw.hidden_dim = 256
    # digits: batch 64 x 9 tiles through the backbone
    common.parts_task_schedule(c, preset, digits_batch_size=64, digits_epochs=15.0)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
