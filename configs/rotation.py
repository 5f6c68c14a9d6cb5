"""Rotation prediction configs: ``--config=configs/rotation.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. ``--config.rotation.head=gap`` reproduces the GAP trap;
``spatial`` (default) and ``attention`` keep the layout.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("rotation")
    common.apply_data_preset(c, preset)

    c.rotation = ml_collections.ConfigDict()
    c.rotation.head = "spatial"  # spatial | attention | gap
    c.rotation.hidden_dim = 0  # 0: linear head

    if preset == "digits":  # B = 128 images -> 512 rotated copies per step
        c.augment.scale = (0.5, 1.0)
        common.set_schedule(
            c,
            optimizer="adamw",
            learning_rate=2e-3,
            batch_size=128,
            num_epochs=30.0,
            weight_decay=1e-4,
            warmup_epochs=2.0,
            probe_epochs=200,
        )
    elif preset == "imagenet":
        c.augment.scale = (0.08, 1.0)
        common.set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.1,
            batch_size=512,
            num_epochs=35.0,
            weight_decay=5e-4,
            warmup_epochs=1.0,
        )
    else:  # Gidaris et al. on CIFAR-10: SGD momentum 0.9, lr 0.1, wd 5e-4, batch 128, 100 epochs
        c.augment.scale = (0.25, 1.0)
        c.optim.scale_lr_by_batch = False
        common.set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.1,
            batch_size=128,
            num_epochs=100.0,
            weight_decay=5e-4,
            warmup_epochs=1.0,
        )
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
