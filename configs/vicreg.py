"""VICReg configs: ``--config=configs/vicreg.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, LARS, batch 2048).

Sources: ImageNet, the paper and facebookresearch/vicreg (main_vicreg.py,
augmentations.py: BYOL's asymmetric views); CIFAR-10, solo-learn's ResNet-18
recipe (scripts/pretrain/cifar/vicreg.yaml, read at solo-learn commit 9187ea3:
its own views, scale 0.2-1, no blur, solarisation 0.1 on both).

Differences jssl's optimiser cannot express: solo-learn's LARS eta 0.02 and lr
clipping (optax's LARS: 0.001, no clipping).
"""

import ml_collections

from configs import byol as byol_config
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("vicreg")
    common.apply_data_preset(c, preset)
    byol_config.asymmetric_augment(c, preset)  # facebookresearch/vicreg augmentations.py

    # VICReg: expander 8192-8192-8192 (Linear-BN-ReLU x 2, Linear), coefficients 25 / 25 / 1.
    c.vicreg = ml_collections.ConfigDict()
    c.vicreg.proj_hidden_dims = (8192, 8192)
    c.vicreg.proj_dim = 8192
    c.vicreg.sim_coeff = 25.0
    c.vicreg.std_coeff = 25.0
    c.vicreg.cov_coeff = 1.0

    if preset == "digits":
        # 1,437 training images, 300 steps: the SimCLR digits schedule, a 256-d expander.
        common.digits_schedule(c)
        c.vicreg.proj_hidden_dims = (256, 256)
        c.vicreg.proj_dim = 256
    elif preset in ("cifar10", "cifar10_folder", "stl10"):
        # solo-learn vicreg.yaml: LARS lr 0.3 (batch 256), wd 1e-4, 1000 epochs, 10 warm-up
        # epochs (solo-learn's default), expander 2048-2048-2048, 25 / 25 / 1. STL-10 has
        # no published recipe: the same optimiser with the paper's views at 96 px, 500 epochs.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=0.3,
            batch_size=256,
            num_epochs=500.0 if preset == "stl10" else 1000.0,
            weight_decay=1e-4,
            warmup_epochs=10.0,
        )
        c.vicreg.proj_hidden_dims = (2048, 2048)
        c.vicreg.proj_dim = 2048
        if preset != "stl10":
            c.augment.scale = (0.2, 1.0)
            c.augment.global_blur_p = (0.0,)
            c.augment.global_solarize_p = (0.1,)
    elif preset == "imagenet":
        # VICReg paper / main_vicreg.py: LARS base lr 0.2 x batch/256, wd 1e-6, batch 2048,
        # 1000 epochs, 10 warm-up epochs.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=0.2,
            batch_size=2048,
            num_epochs=1000.0,
            weight_decay=1e-6,
            warmup_epochs=10.0,
        )
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.vicreg.proj_hidden_dims = (64, 64)
        c.vicreg.proj_dim = 64
    return c
