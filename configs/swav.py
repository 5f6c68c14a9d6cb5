"""SwAV configs: ``--config=configs/swav.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ResNet-50, 2x224 + 6x96 crops,
3,000 prototypes, LARS lr 4.8 at batch 4096, as the SwAV paper).

``augment.crop_size`` / ``augment.scale`` are the global crops (also the
evaluation resolution); the ``augment.local_*`` fields the local crops (the
same fields as configs/dino.py). ``swav.queue_size`` > 0 turns on the queue of
past embeddings from epoch ``swav.queue_start_epochs``.
"""

import ml_collections

from configs import common


def _swav_augment(c: ml_collections.ConfigDict) -> None:
    """SwAV's multi-crop policy (main_swav.py / MultiCropDataset) in place of SimCLR's fields:
    2 global crops (scale 0.14-1) and 6 local 96 px crops (scale 0.05-0.14), flip, colour
    distortion of strength 1 (jitter 0.8, 0.8, 0.8, 0.2 with p=0.8, grayscale 0.2) and a
    Gaussian blur (sigma [0.1, 2]) with p=0.5 on every crop; no solarisation."""
    a = c.augment
    del a.strength, a.blur_p
    a.scale = (0.14, 1.0)
    a.num_global_crops = 2
    a.num_local_crops = 6
    a.local_crop_size = 96
    a.local_scale = (0.05, 0.14)
    a.jitter = (0.8, 0.8, 0.8, 0.2)
    a.jitter_p = 0.8
    a.gray_p = 0.2 if c.data.name != "digits" else 0.0
    a.global_blur_p = (0.5,)
    a.global_solarize_p = (0.0,)
    a.local_blur_p = 0.5
    a.blur_sigma = (0.1, 2.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("swav")
    common.apply_data_preset(c, preset)
    _swav_augment(c)

    # SwAV (Caron et al. 2020; facebookresearch/swav main_swav.py): projector 2048 -> 128,
    # 3,000 prototypes, T = 0.1, Sinkhorn epsilon 0.05 with 3 iterations, prototypes frozen
    # for the first 313 iterations (one epoch at batch 4096), queue off by default (3,840 from
    # epoch 15 for small batches).
    c.swav = ml_collections.ConfigDict()
    c.swav.proj_hidden_dims = (2048,)
    c.swav.proj_dim = 128
    c.swav.num_prototypes = 3000
    c.swav.temperature = 0.1
    c.swav.epsilon = 0.05
    c.swav.sinkhorn_iters = 3
    c.swav.freeze_prototypes_epochs = 1.0
    c.swav.queue_size = 0  # 0: no queue
    c.swav.queue_start_epochs = 15.0

    if preset == "digits":
        # 1,437 training images, 300 steps: 2 global 16 px crops and 2 local 8 px crops, a
        # light blur, K = 30 prototypes (about 3 x the 10 classes: 256 images per batch
        # spread over K), a small head, AdamW as the other digits presets, the prototypes
        # frozen for the first epoch (5 steps).
        common.digits_schedule(c)
        c.augment.scale = (0.5, 1.0)
        c.augment.num_local_crops = 2
        c.augment.local_crop_size = 8
        c.augment.local_scale = (0.2, 0.5)
        c.augment.jitter = (0.4, 0.4, 0.2, 0.1)
        c.augment.global_blur_p = (0.5, 0.1)
        c.augment.local_blur_p = 0.2
        c.augment.blur_sigma = (0.1, 1.0)
        c.swav.proj_hidden_dims = (128,)
        c.swav.proj_dim = 64
        c.swav.num_prototypes = 30
    elif preset in ("cifar10", "cifar10_folder"):
        # solo-learn scripts/pretrain/cifar/swav.yaml (commit 3a64e558): ResNet-18, batch 256,
        # 1000 epochs, LARS lr 0.6 (warmup + cosine), wd 1e-6, projector 2048 -> 128, 3,000
        # prototypes, T = 0.1, queue 3,840 from epoch 50, prototypes frozen for 2 epochs;
        # augmentations/symmetric.yaml: 2 crops of 32 px (no local crops), scale 0.08-1,
        # jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale 0.2, blur 0.5, flip. Differences:
        # solo-learn's prototypes are a weight-normalised layer with a learned norm, here
        # SwAV's unit-norm prototypes; its LARS eta 0.02 / clip_lr are not reproduced.
        c.num_epochs = 1000.0
        c.batch_size = 256
        c.augment.scale = (0.08, 1.0)
        c.augment.num_local_crops = 0
        c.augment.local_crop_size = 16  # unused without local crops
        c.swav.queue_size = 3840
        c.swav.queue_start_epochs = 50.0
        c.swav.freeze_prototypes_epochs = 2.0
        c.optim.name = "lars"
        c.optim.learning_rate = 0.6
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    elif preset == "stl10":
        # No published SwAV STL-10 recipe: the CIFAR-10 one with 2 x 96 px + 4 x 48 px crops.
        c.num_epochs = 500.0
        c.batch_size = 256
        c.augment.num_local_crops = 4
        c.augment.local_crop_size = 48
        c.swav.queue_size = 3840
        c.swav.queue_start_epochs = 50.0
        c.swav.freeze_prototypes_epochs = 2.0
        c.optim.name = "lars"
        c.optim.learning_rate = 0.6
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    elif preset == "imagenet":
        # SwAV ResNet-50, batch 4096: LARC lr 4.8 (0.3 x 4096 / 256) to 0.0048, wd 1e-6,
        # 10 warm-up epochs, 2x224 + 6x96 crops, no queue; 100 epochs here (SwAV's headline
        # run is 800).
        c.num_epochs = 100.0
        c.optim.name = "lars"
        c.optim.learning_rate = 0.3
        c.optim.end_lr_factor = 1e-3
        c.optim.weight_decay = 1e-6
        c.optim.warmup_epochs = 10.0
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.augment.num_local_crops = 2
        c.augment.local_crop_size = min(c.augment.local_crop_size, 16)
        c.swav.proj_hidden_dims = (32,)
        c.swav.proj_dim = 16
        c.swav.num_prototypes = 16
        c.swav.freeze_prototypes_epochs = 0.0
        # The queue from step 1: a 64-row queue (2 batches) full from step 3 on.
        c.swav.queue_size = 64
        c.swav.queue_start_epochs = 0.0
    return c
