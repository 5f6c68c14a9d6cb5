"""Barlow Twins configs: ``--config=configs/barlow_twins.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, LARS, batch 2048).

Sources: ImageNet, the paper and facebookresearch/barlowtwins (main.py);
CIFAR-10, solo-learn's ResNet-18 recipe (scripts/pretrain/cifar/barlow.yaml
with augmentations/asymmetric.yaml, read at solo-learn commit 9187ea3).

Differences jssl's optimiser cannot express: the paper's separate bias / BN
learning rate (0.0048 x batch/256 beside 0.2 for the weights; here one lr);
solo-learn's LARS eta 0.02 and lr clipping (optax's LARS: 0.001, no clipping).
"""

import ml_collections

from configs import byol as byol_config
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("barlow_twins")
    common.apply_data_preset(c, preset)
    byol_config.asymmetric_augment(c, preset)  # the paper's views are BYOL's

    # Barlow Twins: projector 8192-8192-8192 (Linear-BN-ReLU x 2, Linear), lambda 0.0051.
    c.barlow_twins = ml_collections.ConfigDict()
    c.barlow_twins.proj_hidden_dims = (8192, 8192)
    c.barlow_twins.proj_dim = 8192
    c.barlow_twins.lambda_ = 0.0051
    c.barlow_twins.scale_loss = 1.0  # the loss is multiplied by this

    if preset == "digits":
        # 1,437 training images, 300 steps: the SimCLR digits schedule, a 256-d projector.
        common.digits_schedule(c)
        c.barlow_twins.proj_hidden_dims = (256, 256)
        c.barlow_twins.proj_dim = 256
    elif preset in ("cifar10", "cifar10_folder", "stl10"):
        # solo-learn barlow.yaml: LARS lr 0.3 (batch 256), wd 1e-4, 1000 epochs, 10 warm-up
        # epochs (solo-learn's default), projector 2048-2048-2048, lambda 0.0051
        # (solo-learn's default), scale_loss 0.1. STL-10 has no published recipe:
        # the same, at 96 px with the paper's blur, for 500 epochs.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=0.3,
            batch_size=256,
            num_epochs=500.0 if preset == "stl10" else 1000.0,
            weight_decay=1e-4,
            warmup_epochs=10.0,
        )
        c.barlow_twins.proj_hidden_dims = (2048, 2048)
        c.barlow_twins.proj_dim = 2048
        c.barlow_twins.scale_loss = 0.1
    elif preset == "imagenet":
        # Barlow Twins paper: LARS lr 0.2 x batch/256 (weights), wd 1.5e-6, batch 2048,
        # 1000 epochs, 10 warm-up epochs.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=0.2,
            batch_size=2048,
            num_epochs=1000.0,
            weight_decay=1.5e-6,
            warmup_epochs=10.0,
        )
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.barlow_twins.proj_hidden_dims = (64, 64)
        c.barlow_twins.proj_dim = 64
    return c
