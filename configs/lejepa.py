"""LeJEPA configs: ``--config=configs/lejepa.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small ConvNet,
minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ViT-S/16; modifier ``resnet50`` for the
ResNet-50 with the README's ResNet weight decay).

Sources: rbalestr-lab/lejepa (README.md "GOTO hyperparameters": 2 global crops of 30-100%
and 6 local crops of 5-30%, one colour policy for all crops, AdamW lr 5e-4, weight decay
5e-2 for ViTs and 5e-4 for ResNets, linear warm-up then cosine to lr / 1000, bf16;
MINIMAL.md: the projector Linear-BN-ReLU x 2 (2048) then Linear, lambda 0.02, 17 knots on
[0, 3], batch 256); 1024 slices as the README's quick start and stable-pretraining.

Not published, chosen here: the projector width 128 (MINIMAL.md's class default; its
recommended ImageNette command uses 16, stable-pretraining 512); the batch (MINIMAL.md's
256, the lr scaled by batch / 256 beyond it); 96 px local crops for the ViT-S/16 (the
README's 98 px are for patch 14); one warm-up epoch (MINIMAL.md) on ImageNet and CIFAR.
"""

import ml_collections

from configs import common


def _lejepa_augment(c: ml_collections.ConfigDict) -> None:
    """The authors' multi-crop views: every crop gets the same colour policy."""
    a = c.augment
    del a.strength, a.blur_p
    a.scale = (0.3, 1.0)  # global crops
    a.num_global_crops = 2
    a.num_local_crops = 6
    a.local_crop_size = 96
    a.local_scale = (0.05, 0.3)
    a.jitter = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    a.jitter_p = 0.8
    a.gray_p = 0.2 if c.data.name != "digits" else 0.0
    a.global_blur_p = (0.5,)
    a.global_solarize_p = (0.2,)
    a.local_blur_p = 0.5
    a.local_solarize_p = 0.2
    a.blur_sigma = (0.1, 2.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg, modifiers=(*common.MODIFIERS, "resnet50"))
    if "resnet50" in modifiers and preset != "imagenet":
        raise ValueError(f"Bad config argument {arg!r}: the resnet50 modifier is for imagenet")
    c = common.base_config("lejepa")
    common.apply_data_preset(c, preset)
    _lejepa_augment(c)

    c.lejepa = ml_collections.ConfigDict()
    c.lejepa.proj_hidden_dims = (2048, 2048)
    c.lejepa.proj_dim = 128
    c.lejepa.lambda_ = 0.02  # SIGReg's weight: lambda * sigreg + (1 - lambda) * invariance
    c.lejepa.num_slices = 1024  # fresh random directions every step
    c.lejepa.num_points = 17  # trapezoid knots on [0, t_max]
    c.lejepa.t_max = 3.0
    c.lejepa.rankme_warn_fraction = 0.25  # warn when RankMe falls under this share of its start

    # AdamW, lr 5e-4 x batch / 256, cosine to lr / 1000 after a linear warm-up.
    c.optim.name = "adamw"
    c.optim.learning_rate = 5e-4
    c.optim.end_lr_factor = 1e-3
    c.optim.warmup_epochs = 1.0
    c.optim.weight_decay = 5e-4  # ResNets and ConvNets; ViTs 5e-2
    c.batch_size = 256

    if preset == "digits":
        # 1,437 training images of 8x8 px, 300 steps: the digits ConvNet, 16 px globals and
        # 8 px locals (a 5% crop of an 8x8 digit is a pixel or two), mild blur.
        common.digits_schedule(c)
        c.optim.weight_decay = 5e-4
        c.augment.local_crop_size = 8
        c.augment.local_scale = (0.2, 0.5)
        c.augment.global_blur_p = (0.2,)
        c.augment.local_blur_p = 0.2
        c.augment.blur_sigma = (0.1, 1.0)
        c.lejepa.proj_hidden_dims = (512, 512)
        c.lejepa.proj_dim = 64
    elif preset in ("cifar10", "cifar10_folder"):
        # ResNet-18 (CIFAR stem), 32 px globals, 16 px locals, 800 epochs (MINIMAL.md's run).
        c.num_epochs = 800.0
        c.augment.local_crop_size = 16
    elif preset == "stl10":
        c.num_epochs = 500.0
        c.augment.local_crop_size = 48
    elif preset == "imagenet":
        # The README's models and 100 epochs: ViT-S/16 (weight decay 5e-2), 224 px globals,
        # 96 px locals; ``resnet50`` keeps the preset's ResNet-50 (weight decay 5e-4).
        c.num_epochs = 100.0
        c.augment.crop_size = 224
        if "resnet50" not in modifiers:
            c.model.name = "vit_small"
            c.model.kwargs = ml_collections.ConfigDict({"patch_size": 16, "image_size": 224})
            c.optim.weight_decay = 5e-2
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.augment.num_local_crops = 2
        c.lejepa.proj_hidden_dims = (64,)
        c.lejepa.proj_dim = 32
        c.lejepa.num_slices = 64
    return c
