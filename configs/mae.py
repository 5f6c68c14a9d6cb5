"""MAE configs: ``--config=configs/mae.py:PRESET[,smoke]``.

Presets: digits (default; scikit-learn's 8x8 digits, no download, a small ViT, minutes on a
CPU), cifar10 (tfds), cifar10_folder (an image folder: --config.data.path=DIR), stl10,
imagenet (ViT-B/16 with a 512-d, 8-block decoder, as the paper).

Sources: ImageNet, facebookresearch/mae PRETRAIN.md and main_pretrain.py (mask ratio 0.75,
norm_pix_loss, AdamW betas (0.9, 0.95), base lr 1.5e-4 x batch/256, weight decay 0.05,
batch 4096, 800 epochs with 40 warm-up, random resized crop scale 0.2-1 and a flip);
models_mae.py (mae_vit_base_patch16_dec512d8b: decoder 512-d, 8 blocks, 16 heads, MLP
ratio 4; fixed sine-cosine position embeddings). CIFAR-10, solo-learn's recipe
(scripts/pretrain/cifar/mae.yaml with augmentations/reconstruction.yaml, read at commit
07f8c3b): ViT-S with 4 px patches on 32 px, the same decoder, AdamW lr 2e-4 at batch 256,
weight decay 0.05, betas (0.9, 0.95), 1000 epochs, crops of scale 0.08-1 with a flip.

Not reproduced: MAE normalises the input by the ImageNet mean and std (jssl's views are in
[0, 1]; with norm_pix the targets are normalised per patch anyway).
"""

import ml_collections

from configs import common


def _vit(**kwargs) -> ml_collections.ConfigDict:
    """ViT arguments for MAE's encoder: fixed sine-cosine position embeddings."""
    return ml_collections.ConfigDict({**kwargs, "pos_embedding": "sincos"})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("mae")
    common.apply_data_preset(c, preset)
    # MAE's views: a random resized crop and a flip, no colour augmentation.
    a = c.augment
    del a.strength, a.jitter_p, a.gray_p, a.blur_p
    a.scale = (0.2, 1.0)

    c.mae = ml_collections.ConfigDict()
    c.mae.mask_ratio = 0.75
    c.mae.norm_pix = True
    c.mae.decoder_hidden = 512
    c.mae.decoder_depth = 8
    c.mae.decoder_num_heads = 16
    c.mae.decoder_mlp_dim = 2048  # MLP ratio 4

    common.set_schedule(
        c,
        optimizer="adamw",
        learning_rate=1.5e-4,
        batch_size=4096,
        num_epochs=800.0,
        weight_decay=0.05,
        warmup_epochs=40.0,
    )
    c.optim.b2 = 0.95

    if preset == "digits":
        # 1,437 images of 8x8 px seen at 16 px: 4 px patches (16 of them, 4 visible at
        # 75%), a 4-block, 64-wide ViT and a 2-block, 64-wide decoder; 1,000 steps (after
        # 300, kNN 0.66, below the untrained ViT's 0.69; after 1,000, 0.90).
        c.model.name = "vit_tiny"
        c.model.kwargs = _vit(
            patch_size=4, image_size=16, depth=4, hidden=64, num_heads=4, mlp_dim=256
        )
        c.mae.decoder_hidden = 64
        c.mae.decoder_depth = 2
        c.mae.decoder_num_heads = 4
        c.mae.decoder_mlp_dim = 256
        common.set_schedule(
            c,
            optimizer="adamw",
            learning_rate=1e-3,
            batch_size=256,
            num_epochs=200.0,
            weight_decay=0.05,
            warmup_epochs=5.0,
            probe_epochs=200,
        )
    elif preset in ("cifar10", "cifar10_folder"):
        c.model.name = "vit_small"
        c.model.kwargs = _vit(patch_size=4, image_size=32)
        c.augment.scale = (0.08, 1.0)
        common.set_schedule(
            c,
            optimizer="adamw",
            learning_rate=2e-4,
            batch_size=256,
            num_epochs=1000.0,
            weight_decay=0.05,
            warmup_epochs=10.0,  # solo-learn's default scheduler.warmup_epochs
        )
    elif preset == "stl10":
        # No published STL-10 recipe: solo-learn's CIFAR recipe with 8 px patches on 96 px.
        c.model.name = "vit_small"
        c.model.kwargs = _vit(patch_size=8, image_size=96)
        c.augment.scale = (0.08, 1.0)
        common.set_schedule(
            c,
            optimizer="adamw",
            learning_rate=2e-4,
            batch_size=256,
            num_epochs=500.0,
            weight_decay=0.05,
            warmup_epochs=10.0,
        )
    elif preset == "imagenet":
        c.model.name = "vit_base"
        c.model.kwargs = _vit(patch_size=16, image_size=224)
    if "cpu" in modifiers:  # a decoder at the scale of the CPU-sized ViT
        common.apply_cpu(c, preset)
        c.mae.update(decoder_hidden=128, decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=512)
    if "smoke" in modifiers:
        common.apply_smoke(c)
        c.model.name = "vit_tiny"
        size = c.augment.crop_size
        c.model.kwargs = _vit(
            patch_size=max(1, size // 4), image_size=size, depth=1, hidden=32, num_heads=2,
            mlp_dim=64,
        )  # fmt: skip
        c.mae.decoder_hidden = 32
        c.mae.decoder_depth = 1
        c.mae.decoder_num_heads = 2
        c.mae.decoder_mlp_dim = 64
    return c
