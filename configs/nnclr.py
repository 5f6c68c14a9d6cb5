"""NNCLR configs: ``--config=configs/nnclr.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, LARS, batch 4096, support
set 98,304, T = 0.1, as the NNCLR paper).

The views are BYOL's asymmetric pair (configs/mocov3.asymmetric_augment).
``nnclr.queue_size`` (the support set) must be at least the global batch size.
"""

import ml_collections

from configs import common
from configs.mocov3 import asymmetric_augment, digits_augment


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("nnclr")
    common.apply_data_preset(c, preset)
    asymmetric_augment(c)

    # NNCLR (Dwibedi et al. 2021, arXiv:2104.14548; no official code): support set 98,304,
    # T = 0.1, BYOL's augmentations, 3-layer projector (hidden 2048, output 256) and 2-layer
    # predictor (hidden 4096). The layer layout (BN on the projector's output, none on the
    # predictor's) is solo-learn's solo/methods/nnclr.py (its output BN's shift, which gets
    # no gradient, is left out).
    c.nnclr = ml_collections.ConfigDict()
    c.nnclr.temperature = 0.1
    c.nnclr.queue_size = 98304
    c.nnclr.proj_hidden_dims = (2048, 2048)
    c.nnclr.proj_dim = 256
    c.nnclr.pred_hidden_dims = (4096,)
    c.nnclr.last_bn = True
    c.nnclr.pred_last_bn = False
    c.nnclr.last_bn_scale = True

    if preset == "digits":
        # 1,437 training images, batch 256: a support set of 512 (two batches; it must hold
        # more than one), small heads, AdamW as the other digits presets.
        common.digits_schedule(c)
        digits_augment(c)
        c.nnclr.queue_size = 512
        c.nnclr.proj_hidden_dims = (128, 128)
        c.nnclr.proj_dim = 64
        c.nnclr.pred_hidden_dims = (128,)
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn scripts/pretrain/cifar/nnclr.yaml (commit 72c172b8): ResNet-18, batch 256,
        # 1000 epochs, LARS lr 0.4 (warmup + cosine), wd 1e-5, T = 0.2, queue 65,536,
        # projector 2048 -> 256, predictor 4096; augmentations/asymmetric.yaml (no blur on
        # 32 px, solarisation 0 / 0.2). solo-learn's LARS eta 0.02 / clip_lr are not reproduced.
        c.num_epochs = 1000.0
        c.batch_size = 256
        c.nnclr.temperature = 0.2
        c.nnclr.queue_size = 65536
        c.augment.global_blur_p = (0.0, 0.0)
        c.optim.name = "lars"
        c.optim.learning_rate = 0.4
        c.optim.weight_decay = 1e-5
        c.optim.warmup_epochs = 10.0
    elif preset == "stl10":
        # No published NNCLR STL-10 recipe: the CIFAR-10 one at 96 px (with blur), 500 epochs.
        c.num_epochs = 500.0
        c.batch_size = 256
        c.nnclr.temperature = 0.2
        c.nnclr.queue_size = 65536
        c.optim.name = "lars"
        c.optim.learning_rate = 0.4
        c.optim.weight_decay = 1e-5
        c.optim.warmup_epochs = 10.0
    elif preset == "imagenet":
        # NNCLR paper: ResNet-50, batch 4096, LARS, wd 1e-6, 1000 epochs, 10 warm-up epochs.
        # The base learning rate (0.3 x batch / 256, SimCLR's, whose code NNCLR builds on)
        # could not be checked against the paper's text here.
        c.num_epochs = 1000.0
        c.optim.name = "lars"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.nnclr.queue_size = 64
        c.nnclr.proj_hidden_dims = (32,)
        c.nnclr.proj_dim = 16
        c.nnclr.pred_hidden_dims = (32,)
    return c
