"""DINO configs: ``--config=configs/dino.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small
ConvNet, minutes on a CPU), cifar10 (tfds), cifar10_folder (an image folder:
--config.data.path=DIR), stl10, imagenet (ViT-S/16, AdamW lr 5e-4 x batch/256,
2x224 + 10x96 crops, K = 65,536, as the DINO paper). Modifier ``dinov2`` (e.g.
``digits,dinov2``) adds DINOv2's Sinkhorn-Knopp teacher, KoLeo and iBOT losses
(``_dinov2``); ``dinov3`` adds DINOv3's Gram anchoring and registers on top (``_dinov3``).

``augment.crop_size`` / ``augment.scale`` are the global crops (also the
evaluation resolution); the ``augment.local_*`` fields the local crops.
"""

import ml_collections

from configs import common


def _dino_augment(c: ml_collections.ConfigDict) -> None:
    """DINO's multi-crop policy in place of SimCLR's (strength, blur_p are not used)."""
    a = c.augment
    del a.strength, a.blur_p
    a.scale = (0.4, 1.0)  # global crops
    a.num_global_crops = 2
    a.num_local_crops = 6
    a.local_crop_size = 96
    a.local_scale = (0.05, 0.4)
    a.jitter = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    a.jitter_p = 0.8
    a.gray_p = 0.2 if c.data.name != "digits" else 0.0
    # Global crop i uses entry i (the last repeats): blur always on crop 1;
    # blur 0.1 and solarisation 0.2 on crop 2.
    a.global_blur_p = (1.0, 0.1)
    a.global_solarize_p = (0.0, 0.2)
    a.local_blur_p = 0.5
    a.blur_sigma = (0.1, 2.0)


def _dino_block() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.out_dim = 65536  # K prototypes
    d.hidden_dim = 2048
    d.bottleneck_dim = 256
    d.num_layers = 3
    d.head_use_bn = False
    d.norm_last_layer = True  # False: learned weight norm ("non-normalised last layer")
    d.freeze_last_layer_epochs = 1.0
    d.student_temp = 0.1
    d.warmup_teacher_temp = 0.04
    d.teacher_temp = 0.07
    d.warmup_teacher_temp_epochs = 30.0
    d.center_momentum = 0.9
    # "centre" (DINO) or "sinkhorn_knopp": DINOv2's teacher, balanced over the K prototypes
    # by 3 Sinkhorn-Knopp iterations on the [CLS] and iBOT heads instead of centring.
    d.centering = "centre"
    d.teacher_momentum = 0.996  # cosine to teacher_momentum_end
    d.teacher_momentum_end = 1.0
    # DINOv2's additions (facebookresearch/dinov2 configs/ssl_default_config.yaml), off here;
    # the "dinov2" modifier turns them on with DINOv2's weights. KoLeo on the student's [CLS]
    # features of each global crop (DINOv2: koleo_loss_weight 0.1).
    d.koleo_weight = 0.0
    # iBOT's masked-patch loss (DINOv2: ibot.loss_weight 1.0, mask_sample_probability 0.5,
    # mask_ratio_min_max (0.1, 0.5), separate_head False; a separate head has DINO's sizes).
    # Needs a ViT backbone.
    d.ibot_weight = 0.0
    d.ibot_mask_probability = 0.5
    d.ibot_mask_ratio = (0.1, 0.5)
    d.ibot_separate_head = False
    d.ibot_out_dim = 65536
    d.ibot_hidden_dim = 2048
    d.ibot_bottleneck_dim = 256
    d.ibot_num_layers = 3
    # DINOv3's Gram anchoring (dinov3_vit7b16_gram_anchor.yaml), off here; the "dinov3"
    # modifier turns it on: the student's patch features of its global crops against a
    # frozen snapshot of the teacher's ViT, taken at gram_start_epochs and refreshed every
    # gram_update_epochs; MSE of the patch-similarity (Gram) matrices, per image.
    d.gram_weight = 0.0
    d.gram_start_epochs = 0.0
    d.gram_update_epochs = 10.0
    d.gram_img_level = True
    d.gram_remove_neg = False
    d.gram_remove_only_teacher_neg = False
    return d


def _dinov2(c: ml_collections.ConfigDict, preset: str) -> None:
    """DINOv2's losses (ssl_default_config.yaml): the Sinkhorn-Knopp teacher, KoLeo 0.1,
    iBOT 1.0 on 10-50% of the
    patches of half the global crops; iBOT needs patch tokens, so the presets whose
    backbone is convolutional get a ViT. ImageNet also gets DINOv2's crop scales (globals
    0.32-1, 8 locals of 0.05-0.32) and teacher momentum 0.992. Not reproduced: DINOv2's
    layer-wise lr decay (0.9), patch-embedding lr factor 0.2, stochastic depth and
    LayerScale, its sqrt(batch / 1024) lr scaling (base lr 0.004) and the registers."""
    d = c.dino
    d.centering = "sinkhorn_knopp"  # ssl_default_config.yaml train.centering
    d.koleo_weight = 0.1
    d.ibot_weight = 1.0
    d.ibot_out_dim = d.out_dim
    d.ibot_hidden_dim = d.hidden_dim
    d.ibot_bottleneck_dim = d.bottleneck_dim
    vit = {
        "digits": dict(patch_size=4, image_size=16, depth=4, hidden=64, num_heads=4, mlp_dim=256),
        "cifar10": dict(patch_size=4, image_size=32),
        "cifar10_folder": dict(patch_size=4, image_size=32),
        "stl10": dict(patch_size=8, image_size=96),
    }
    if preset in vit:
        c.model.name = "vit_tiny" if preset == "digits" else "vit_small"
        c.model.kwargs = ml_collections.ConfigDict(vit[preset])
    if preset == "imagenet":
        c.augment.scale = (0.32, 1.0)
        c.augment.local_scale = (0.05, 0.32)
        c.augment.num_local_crops = 8
        d.teacher_momentum = 0.992


def _dinov3(c: ml_collections.ConfigDict) -> None:
    """DINOv3's Gram anchoring on top of DINOv2's losses: weight 1 (the anchoring config's
    loss_weight), a separate iBOT head, 4 registers ("storage tokens") in the ViT; the
    Gram phase is the second half of the run, the Gram teacher refreshed every tenth of it
    (DINOv3 anchors the last 16% of a 1.2M-iteration run, refreshing every 10,000)."""
    d = c.dino
    d.gram_weight = 1.0
    d.gram_start_epochs = c.num_epochs / 2
    d.gram_update_epochs = c.num_epochs / 10
    d.ibot_separate_head = True
    c.model.kwargs.num_registers = 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg, modifiers=(*common.MODIFIERS, "dinov2", "dinov3"))
    c = common.base_config("dino")
    common.apply_data_preset(c, preset)
    _dino_augment(c)
    c.dino = _dino_block()

    # DINO's optimiser: AdamW, lr 5e-4 x batch/256, 10 warm-up epochs, weight
    # decay 0.04 -> 0.4 (cosine), gradient clipping 3.0 per tensor (jssl.optim.dino_adamw).
    c.optim.name = "dino_adamw"
    c.optim.weight_decay_end = 0.4  # cosine from optim.weight_decay
    c.optim.learning_rate = 5e-4
    c.optim.warmup_epochs = 10.0
    c.optim.weight_decay = 0.04
    c.optim.grad_clip = 3.0
    c.optim.end_lr_factor = 1e-6 / 5e-4  # DINO's min_lr 1e-6 at lr 5e-4

    if preset == "digits":
        # 1,437 training images of 8x8 px and 300 steps: a ConvNet, 16 px global
        # and 8 px local crops, light blur (a sigma-2 blur of an 8x8 digit is a
        # smudge), K = 256 prototypes and a small head with BatchNorm. The
        # untrained ConvNet maps all digits to nearly the same point (mean
        # feature cosine 0.93): the head's BatchNorm and a sharper teacher
        # (0.02 -> 0.04) give the teacher distinct targets from the start;
        # without them the run collapses to uniform outputs within 40 steps.
        c.num_epochs = 60.0
        c.augment.local_crop_size = 8
        c.augment.local_scale = (0.2, 0.5)
        c.augment.scale = (0.5, 1.0)
        c.augment.num_local_crops = 4
        c.augment.global_blur_p = (0.5, 0.1)
        c.augment.local_blur_p = 0.2
        c.augment.blur_sigma = (0.1, 1.0)
        c.dino.out_dim = 256
        c.dino.hidden_dim = 512
        c.dino.bottleneck_dim = 128
        c.dino.head_use_bn = True
        c.dino.warmup_teacher_temp = 0.02
        c.dino.teacher_temp = 0.04
        c.dino.warmup_teacher_temp_epochs = 10.0
        c.dino.teacher_momentum = 0.99
        c.optim.learning_rate = 2e-3
        c.optim.warmup_epochs = 5.0
        c.eval.probe_epochs = 200
    elif preset in ("cifar10", "cifar10_folder"):
        c.num_epochs = 1000.0
        c.augment.scale = (0.14, 1.0)
        c.augment.local_crop_size = 16
        c.augment.local_scale = (0.05, 0.14)
        c.dino.out_dim = 4096
        c.dino.head_use_bn = True  # ResNet heads train better with BN (DINO's --use_bn_in_head)
    elif preset == "stl10":
        c.num_epochs = 500.0
        c.augment.local_crop_size = 48
        c.dino.out_dim = 4096
        c.dino.head_use_bn = True
    elif preset == "imagenet":
        # DINO ViT-S/16, 100 epochs: 2x224 + 10x96 crops, K = 65,536.
        c.num_epochs = 100.0
        c.batch_size = 1024
        c.model.name = "vit_small"
        c.model.kwargs = ml_collections.ConfigDict({"patch_size": 16, "image_size": 224})
        c.augment.crop_size = 224
        c.augment.local_crop_size = 96
        c.augment.num_local_crops = 10
        c.optim.end_lr_factor = 1e-5 / 5e-4  # min_lr 1e-5 for ViT-S 100 epochs
    if modifiers & {"dinov2", "dinov3"}:
        _dinov2(c, preset)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        if preset == "digits":
            # A tiny ViT (patch 4: 4x4 tokens on 16 px globals, 2x2 on 8 px
            # locals) so that a smoke run also feeds the attention-map command.
            c.model.name = "vit_tiny"
            c.model.kwargs = ml_collections.ConfigDict(
                {
                    "patch_size": 4,
                    "image_size": 16,
                    "depth": 2,
                    "hidden": 32,
                    "num_heads": 2,
                    "mlp_dim": 64,
                }
            )
        c.augment.num_local_crops = 2
        c.dino.out_dim = 256
        c.dino.hidden_dim = 64
        c.dino.bottleneck_dim = 32
        c.dino.freeze_last_layer_epochs = 0.0
        c.dino.warmup_teacher_temp_epochs = 0.0
        c.dino.ibot_out_dim = 256
        c.dino.ibot_hidden_dim = 64
        c.dino.ibot_bottleneck_dim = 32
    if c.model.name.startswith("vit"):  # settable from the command line (DINOv2 weights)
        c.model.kwargs.num_registers = c.model.kwargs.get("num_registers", 0)
        c.model.kwargs.layer_scale = c.model.kwargs.get("layer_scale", 0.0)
    if "dinov3" in modifiers:  # after smoke's ViT, whose registers it adds
        _dinov3(c)
        if "smoke" in modifiers:  # the Gram loss from the first step, a refresh every 2
            c.dino.gram_start_epochs = 0.0
            c.dino.gram_update_epochs = 2 * c.batch_size / 1437  # digits' training images
    return c
