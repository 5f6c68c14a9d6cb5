"""SimSiam configs: ``--config=configs/simsiam.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, SGD, batch 512).

Sources: ImageNet, the paper and facebookresearch/simsiam (main_simsiam.py);
CIFAR-10, solo-learn's ResNet-18 recipe (scripts/pretrain/cifar/simsiam.yaml
with augmentations/symmetric_weak.yaml, read at solo-learn commit 9187ea3).

Views: the SimCLR policy (``augment.strength`` 0.5 is SimSiam's colour jitter
0.4/0.4/0.4/0.1 with p 0.8; grayscale 0.2; blur p 0.5). Not reproduced: the
paper's constant learning rate for the predictor (solo-learn's ``static_lr``).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("simsiam")
    common.apply_data_preset(c, preset)
    # SimSiam's (MoCo v2's) symmetric policy: jitter strength 0.5, Gaussian blur p 0.5.
    c.augment.strength = 0.5
    c.augment.blur_p = 0.5

    # SimSiam (facebookresearch/simsiam builder.py): projector 2048-2048-2048 with
    # BN on every layer (the last without affine), predictor 2048 -> 512 -> 2048.
    c.simsiam = ml_collections.ConfigDict()
    c.simsiam.proj_hidden_dims = (2048, 2048)
    c.simsiam.proj_dim = 2048
    c.simsiam.pred_hidden_dims = (512,)

    if preset == "digits":
        # 1,437 training images, 300 steps: the SimCLR digits schedule and views
        # (no blur: an 8x8 digit has none to lose), small heads with the paper's
        # 4:1 predictor bottleneck.
        common.digits_schedule(c)
        c.augment.blur_p = 0.0
        c.simsiam.proj_hidden_dims = (128, 128)
        c.simsiam.proj_dim = 128
        c.simsiam.pred_hidden_dims = (32,)
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn simsiam.yaml: SGD lr 0.5 (batch 256), momentum 0.9, wd 1e-5, 1000
        # epochs, 10 warm-up epochs (solo-learn's default); symmetric_weak.yaml views.
        common.set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.5,
            batch_size=256,
            num_epochs=1000.0,
            weight_decay=1e-5,
            warmup_epochs=10.0,
        )
    elif preset == "stl10":
        # No published STL-10 recipe: solo-learn's CIFAR optimiser at 96 px, 500 epochs.
        common.set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.5,
            batch_size=256,
            num_epochs=500.0,
            weight_decay=1e-5,
            warmup_epochs=10.0,
        )
    elif preset == "imagenet":
        # SimSiam paper: SGD lr 0.05 x batch/256, momentum 0.9, wd 1e-4, batch 512,
        # 100 epochs, cosine without warm-up.
        common.set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.05,
            batch_size=512,
            num_epochs=100.0,
            weight_decay=1e-4,
            warmup_epochs=0.0,
        )
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.simsiam.proj_hidden_dims = (64, 64)
        c.simsiam.proj_dim = 64
        c.simsiam.pred_hidden_dims = (16,)
    return c
