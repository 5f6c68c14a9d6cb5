"""MoCo v3 configs: ``--config=configs/mocov3.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, LARS, batch 4096,
100 epochs, T = 1.0, as facebookresearch/moco-v3's ResNet-50 setup).

The views are BYOL's asymmetric pair (``asymmetric_augment``, shared with
configs/nnclr.py): ``augment.global_blur_p`` / ``augment.global_solarize_p``
give view 1's and view 2's probabilities.
"""

import ml_collections

from configs import common


def asymmetric_augment(c: ml_collections.ConfigDict) -> None:
    """BYOL's two-view policy (MoCo v3 and NNCLR use it) in place of SimCLR's fields:
    crop, flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, blur sigma [0.1, 2]
    with p = 1.0 / 0.1 and solarisation with p = 0 / 0.2 on views 1 / 2."""
    a = c.augment
    del a.strength, a.blur_p
    a.scale = (0.08, 1.0)
    a.jitter = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    a.jitter_p = 0.8
    a.gray_p = 0.2 if c.data.name != "digits" else 0.0
    a.global_blur_p = (1.0, 0.1)
    a.global_solarize_p = (0.0, 0.2)
    a.blur_sigma = (0.1, 2.0)


def digits_augment(c: ml_collections.ConfigDict) -> None:
    """16 px crops of 8x8 digits: lighter blur (a sigma-2 blur of a digit is a smudge)."""
    c.augment.scale = (0.3, 1.0)
    c.augment.global_blur_p = (0.5, 0.1)
    c.augment.blur_sigma = (0.1, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("mocov3")
    common.apply_data_preset(c, preset)
    asymmetric_augment(c)

    # MoCo v3 (Chen, Xie & He 2021; facebookresearch/moco-v3 moco/builder.py, main_moco.py):
    # ResNet MLPs of hidden 4096 and output 256, bias-free Linear layers with BN after every
    # layer (the last without affine), a 2-layer projector and a 2-layer predictor; momentum
    # 0.99 -> 1 (--moco-m-cos); T = 1.0 for ResNet-50 (0.2 for ViTs).
    c.mocov3 = ml_collections.ConfigDict()
    c.mocov3.temperature = 1.0
    c.mocov3.proj_hidden_dims = (4096,)
    c.mocov3.proj_dim = 256
    c.mocov3.pred_hidden_dims = (4096,)
    c.mocov3.last_bn = True  # BN on the projector's output
    c.mocov3.pred_last_bn = True  # ... and on the predictor's
    c.mocov3.last_bn_scale = False  # MoCo v3's BatchNorm1d(affine=False)
    c.mocov3.momentum = 0.99  # cosine to momentum_end over the run
    c.mocov3.momentum_end = 1.0

    if preset == "digits":
        common.digits_schedule(c)
        digits_augment(c)
        c.mocov3.temperature = 0.2
        c.mocov3.proj_hidden_dims = (128,)
        c.mocov3.proj_dim = 64
        c.mocov3.pred_hidden_dims = (128,)
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn scripts/pretrain/cifar/mocov3.yaml (commit 07f8c3bb): ResNet-18, batch
        # 256, 1000 epochs, LARS lr 0.3 (warmup + cosine), wd 1e-6, T = 0.2, projector 4096
        # -> 256, predictor 4096, momentum 0.99 -> 1; augmentations/asymmetric.yaml: crop
        # scale 0.08-1, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, no blur on 32 px,
        # solarisation 0 / 0.2, flip. Not reproduced: solo-learn's LARS eta 0.02, clip_lr and
        # exclusion of biases and norms from the trust ratio are those of its LARS; jssl's
        # LARS masks biases and norms from decay and trust ratio with optax's eta 1e-3.
        c.num_epochs = 1000.0
        c.batch_size = 256
        c.mocov3.temperature = 0.2
        c.augment.global_blur_p = (0.0, 0.0)
        c.optim.name = "lars"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    elif preset == "stl10":
        # No published MoCo v3 STL-10 recipe: the CIFAR-10 one at 96 px (with blur), 500 epochs.
        c.num_epochs = 500.0
        c.batch_size = 256
        c.mocov3.temperature = 0.2
        c.optim.name = "lars"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    elif preset == "imagenet":
        # moco-v3 CONFIG.md, ResNet-50 100 epochs: main_moco.py defaults (LARS, lr 0.6 x
        # batch / 256, wd 1e-6, batch 4096, 10 warm-up epochs, T = 1.0, m = 0.99) with
        # --moco-m-cos --crop-min=.2. (The lr default 0.6 is read from the 300-epoch command,
        # which lowers it to 0.3, not from main_moco.py itself.)
        c.num_epochs = 100.0
        c.augment.scale = (0.2, 1.0)
        c.optim.name = "lars"
        c.optim.learning_rate = 0.6
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.mocov3.proj_hidden_dims = (32,)
        c.mocov3.proj_dim = 16
        c.mocov3.pred_hidden_dims = (32,)
    return c
