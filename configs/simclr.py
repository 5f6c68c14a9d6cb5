"""SimCLR configs: ``--config=configs/simclr.py:PRESET[,smoke|,cpu]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download), cifar10
(tfds), cifar10_folder (an image folder: --config.data.path=DIR), stl10,
imagenet (ResNet-50, LARS, batch 4096).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("simclr")
    common.apply_data_preset(c, preset)

    c.simclr = ml_collections.ConfigDict()
    c.simclr.temperature = 0.5
    c.simclr.proj_dim = 128
    c.simclr.proj_hidden_dims = (512,)  # SimCLR: hidden width = feature width
    c.simclr.proj_use_bn = True

    if preset == "digits":
        common.digits_schedule(c)
        c.simclr.proj_hidden_dims = (128,)
    elif preset in ("cifar10", "cifar10_folder"):
        # SimCLR's CIFAR-10 recipe (google-research/simclr, appendix B.9 of Chen et al.,
        # 2020): LARS lr 1.0, wd 1e-6, t=0.5.
        c.num_epochs = 1000.0
        c.optim.name = "lars"
        c.optim.learning_rate = 1.0
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    elif preset == "stl10":
        c.num_epochs = 500.0
        c.optim.name = "lars"
        c.optim.learning_rate = 1.0
        c.optim.weight_decay = 1e-6
    elif preset == "imagenet":
        # SimCLR ImageNet: LARS lr 0.3 x batch/256, wd 1e-6, t=0.1, 100 epochs.
        c.num_epochs = 100.0
        c.simclr.temperature = 0.1
        c.simclr.proj_hidden_dims = (2048,)
        c.optim.name = "lars"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
        c.simclr.proj_hidden_dims = (128,)  # the CPU network's feature width
        c.augment.scale = (0.2, 1.0)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
