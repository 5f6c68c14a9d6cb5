"""MoCo v2 configs: ``--config=configs/mocov2.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, SGD lr 0.03, batch 256,
K = 65,536, m = 0.999, T = 0.2, as the MoCo v2 paper).

The views are SimCLR's (``augment.strength`` 0.5 is MoCo v2's "aug+" colour
jitter 0.4, 0.4, 0.4, 0.1). ``mocov2.queue_size`` must be at least the global
batch size (a multiple of it keeps the FIFO aligned; others wrap around).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("mocov2")
    common.apply_data_preset(c, preset)

    # MoCo v2 (Chen et al. 2020, arXiv:2003.04297; facebookresearch/moco main_moco.py with
    # --mlp --aug-plus --cos): K = 65,536, m = 0.999, T = 0.2, MLP head 2048 -> 128.
    c.mocov2 = ml_collections.ConfigDict()
    c.mocov2.temperature = 0.2
    c.mocov2.queue_size = 65536
    c.mocov2.momentum = 0.999  # cosine to momentum_end; equal values: constant (MoCo v2)
    c.mocov2.momentum_end = 0.999
    c.mocov2.proj_hidden_dims = (2048,)  # MoCo v2: hidden = feature width (ResNet-50)
    c.mocov2.proj_dim = 128
    # The paper's loss is one direction, q(view 1) against k(view 2); True is solo-learn's
    # symmetrised "MoCo v2+" (two queues, one per view).
    c.mocov2.symmetric = False
    # aug+: RandomResizedCrop(scale=(0.2, 1)), jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
    # grayscale 0.2, blur sigma [0.1, 2] p=0.5, flip.
    c.augment.scale = (0.2, 1.0)
    c.augment.strength = 0.5
    c.augment.blur_p = 0.5

    if preset == "digits":
        # 1,437 training images, 300 steps: AdamW as the other digits presets, a queue of
        # two batches (it must hold more than one), a faster key encoder (m = 0.999 would
        # move it by only 26% of the way in 300 steps), small heads, no blur on 16 px crops.
        common.digits_schedule(c)
        c.mocov2.queue_size = 512
        c.mocov2.momentum = c.mocov2.momentum_end = 0.99
        c.mocov2.proj_hidden_dims = (128,)
        c.mocov2.proj_dim = 64
        c.augment.scale = (0.3, 1.0)
        c.augment.blur_p = 0.0
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn scripts/pretrain/cifar/mocov2plus.yaml (commit 1df0b89d): ResNet-18,
        # batch 256, 1000 epochs, SGD lr 0.3 (warmup + cosine), wd 1e-4, queue 32,768,
        # T = 0.2, projector 2048 -> 256, momentum 0.99 -> 0.999 (cosine), symmetric loss
        # (that recipe is MoCo v2+; --config.mocov2.symmetric=False for the paper's loss),
        # augmentations/symmetric_weak.yaml: crop scale 0.08-1, jitter (0.4, 0.4, 0.4, 0.1)
        # p=0.8, grayscale 0.2, blur 0.5, flip. solo-learn's warm-up length (10 epochs, its
        # warmup_cosine default) was not checked against its code.
        c.num_epochs = 1000.0
        c.batch_size = 256
        c.mocov2.symmetric = True
        c.mocov2.queue_size = 32768
        c.mocov2.momentum, c.mocov2.momentum_end = 0.99, 0.999
        c.mocov2.proj_dim = 256
        c.augment.scale = (0.08, 1.0)
        c.optim.name = "sgd"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 10.0
    elif preset == "stl10":
        # No published MoCo v2 STL-10 recipe: the CIFAR-10 one at 96 px, 500 epochs.
        c.num_epochs = 500.0
        c.mocov2.symmetric = True
        c.mocov2.queue_size = 32768
        c.mocov2.momentum, c.mocov2.momentum_end = 0.99, 0.999
        c.mocov2.proj_dim = 256
        c.augment.scale = (0.08, 1.0)
        c.optim.name = "sgd"
        c.optim.learning_rate = 0.3
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 10.0
    elif preset == "imagenet":
        # MoCo v2 paper / facebookresearch/moco README: ResNet-50, batch 256, SGD lr 0.03,
        # momentum 0.9, wd 1e-4, cosine schedule without warm-up, 200 epochs.
        c.num_epochs = 200.0
        c.batch_size = 256
        c.eval.batch_size = 512
        c.optim.name = "sgd"
        c.optim.learning_rate = 0.03
        c.optim.weight_decay = 1e-4
        c.optim.warmup_epochs = 0.0
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.mocov2.queue_size = 64
        c.mocov2.proj_hidden_dims = (32,)
        c.mocov2.proj_dim = 16
    return c
