"""BYOL configs: ``--config=configs/byol.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, LARS, batch 4096).

Sources: ImageNet, the paper and deepmind-research/byol (configs/byol.py);
CIFAR-10, solo-learn's ResNet-18 recipe (scripts/pretrain/cifar/byol.yaml with
augmentations/asymmetric.yaml, read at solo-learn commit 9187ea3).

Differences from solo-learn that jssl's optimiser cannot express: its LARS uses
eta 0.02 and clips the adapted lr (``clip_lr``); ``jssl.optim``'s LARS is
optax's (trust coefficient 0.001, no clipping).

``asymmetric_augment`` (BYOL's two-view policy) is shared by the Barlow Twins
and VICReg configs.
"""

import ml_collections

from configs import common


def asymmetric_augment(c: ml_collections.ConfigDict, preset: str) -> None:
    """BYOL's asymmetric two-view policy in place of SimCLR's (``strength``/``blur_p`` unused).

    View 1: colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2, blur
    p 1.0, no solarisation; view 2: the same but blur p 0.1 and solarisation
    p 0.2 (the BYOL paper's table 6; Barlow Twins and VICReg use it too). The
    fields are DINO's (``global_blur_p[i]`` is view i's), read by
    ``jssl.methods.parts.asymmetric_views``.
    """
    a = c.augment
    del a.strength, a.blur_p
    a.jitter = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    a.jitter_p = 0.8
    a.gray_p = 0.2 if preset != "digits" else 0.0
    a.global_blur_p = (1.0, 0.1)
    a.global_solarize_p = (0.0, 0.2)
    a.blur_sigma = (0.1, 2.0)
    if preset in ("cifar10", "cifar10_folder"):
        # solo-learn's asymmetric.yaml: no blur on 32 px images, solarisation 0 / 0.2.
        a.global_blur_p = (0.0, 0.0)
    elif preset == "digits":
        # A sigma-2 blur of an 8x8 digit is a smudge (as configs/dino.py's digits preset).
        a.global_blur_p = (0.5, 0.1)
        a.blur_sigma = (0.1, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("byol")
    common.apply_data_preset(c, preset)
    asymmetric_augment(c, preset)

    # BYOL (deepmind-research/byol configs/byol.py): projector 4096 -> 256 and
    # predictor 4096 -> 256, both Linear-BN-ReLU-Linear; target EMA 0.996 -> 1 (cosine).
    c.byol = ml_collections.ConfigDict()
    c.byol.proj_hidden_dims = (4096,)
    c.byol.proj_dim = 256
    c.byol.pred_hidden_dims = (4096,)
    c.byol.use_bn = True
    c.byol.target_momentum = 0.996  # cosine to target_momentum_end over the run
    c.byol.target_momentum_end = 1.0

    if preset == "digits":
        # 1,437 training images, 300 steps: the SimCLR digits schedule (AdamW 2e-3),
        # small heads and a faster target (0.99: the BYOL paper's base for short runs).
        common.digits_schedule(c)
        c.byol.proj_hidden_dims = (256,)
        c.byol.proj_dim = 64
        c.byol.pred_hidden_dims = (256,)
        c.byol.target_momentum = 0.99
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn byol.yaml: LARS lr 1.0 (batch 256), wd 1e-5, 1000 epochs, 10 warm-up
        # epochs (solo-learn's default), base tau 0.99, scale 0.08-1.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=1.0,
            batch_size=256,
            num_epochs=1000.0,
            weight_decay=1e-5,
            warmup_epochs=10.0,
        )
        c.byol.target_momentum = 0.99
    elif preset == "stl10":
        # No published STL-10 recipe: solo-learn's CIFAR optimiser, the paper's
        # augmentation at 96 px, 500 epochs (as configs/simclr.py's stl10).
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=1.0,
            batch_size=256,
            num_epochs=500.0,
            weight_decay=1e-5,
            warmup_epochs=10.0,
        )
        c.byol.target_momentum = 0.99
    elif preset == "imagenet":
        # BYOL paper / deepmind-research/byol: LARS lr 0.2 x batch/256, wd 1.5e-6,
        # batch 4096, 1000 epochs, 10 warm-up epochs, tau 0.996.
        common.set_schedule(
            c,
            optimizer="lars",
            learning_rate=0.2,
            batch_size=4096,
            num_epochs=1000.0,
            weight_decay=1.5e-6,
            warmup_epochs=10.0,
        )
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.byol.proj_hidden_dims = (64,)
        c.byol.proj_dim = 32
        c.byol.pred_hidden_dims = (64,)
    return c
