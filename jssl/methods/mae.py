"""MAE (He et al., 2022): masked autoencoders are scalable vision learners.

- views: one random resized crop (MAE: scale 0.2-1) with a horizontal flip per image, and
  a random mask per image: ``random_masking`` keeps ``int(L * (1 - mask_ratio))`` of the L
  patches (MAE's ``len_keep``), chosen by sorting uniform noise drawn from that image's
  own key (``split(mask_key, B)[b]``), so every image has exactly the same number of
  masked patches, masks of different images are independent, and the masks do not depend
  on the number of devices;
- model: ``MaskedAutoencoder``: a ViT encoder (fixed sine-cosine position embeddings)
  on the visible patches only, then a lightweight transformer decoder that fills the
  masked positions with a learned mask token and predicts every patch's pixels;
- loss: ``losses.mae_loss`` on the masked patches only, with per-patch normalised pixel
  targets when ``mae.norm_pix`` (MAE's ``norm_pix_loss``, the paper's default).

Evaluation (kNN, linear probe, k-means) uses the encoder's final-LN [CLS] token of the
whole, unmasked image (``MaskedAutoencoder`` called without ``keep``). The views are in
[0, 1], not normalised by the ImageNet mean and std as MAE's loader does (with
``norm_pix`` the targets are normalised per patch either way).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses, pretext
from jssl.checks import WIDTH, boolean, integer, real, show
from jssl.methods import parts
from jssl.methods.base import DataInfo, Method
from jssl.models import create_model
from jssl.models.mae import MAEDecoder, MaskedAutoencoder


def num_patches(config: ml_collections.ConfigDict) -> int:
    p = config.model.kwargs.patch_size
    return (config.augment.crop_size // p) ** 2


def num_kept(num: int, mask_ratio: float) -> int:
    """Visible patches of L = ``num``: MAE's ``int(L * (1 - mask_ratio))``."""
    return int(num * (1 - mask_ratio))


def build_model(config: ml_collections.ConfigDict) -> MaskedAutoencoder:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    m = config.mae
    decoder = MAEDecoder(
        hidden=m.decoder_hidden,
        depth=m.decoder_depth,
        num_heads=m.decoder_num_heads,
        mlp_dim=m.decoder_mlp_dim,
        dtype=dtype,
    )
    return MaskedAutoencoder(backbone=backbone, decoder=decoder)


def random_masking(key: jax.Array, batch: int, num: int, mask_ratio: float) -> dict:
    """Per-image random masks of ``num`` patches, as MAE's ``random_masking``.

    Image b sorts ``uniform(split(key, batch)[b], [num])``: the patches with the
    ``num_kept`` smallest values are kept.

    Returns:
      {"keep": int32 [B, K] kept patch indices (ascending noise), "restore": int32 [B, L]
      the position of each patch in [kept..., masked...], "mask": float32 [B, L], 1 = masked},
      K = ``num_kept(num, mask_ratio)``.
    """
    kept = num_kept(num, mask_ratio)
    keys = jax.random.split(key, batch)
    noise = jax.vmap(lambda k: jax.random.uniform(k, (num,)))(keys)
    shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
    restore = jnp.argsort(shuffle, axis=1).astype(jnp.int32)
    mask = (restore >= kept).astype(jnp.float32)
    return {"keep": shuffle[:, :kept], "restore": restore, "mask": mask}


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> dict:
    """{"image": [B, S, S, C] float32 in [0, 1], "keep", "restore", "mask"} (random_masking)."""
    a = config.augment
    k_view, k_mask = jax.random.split(key)
    images = pretext.crop_flip_views(
        k_view, batch["image"], size=a.crop_size, scale=tuple(a.scale), flip=a.flip
    )
    masks = random_masking(k_mask, images.shape[0], num_patches(config), config.mae.mask_ratio)
    return {"image": images, **masks}


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    m = config.mae
    p = config.model.kwargs.patch_size

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # the masks are in the views
        x = views["image"]
        pred, aux = model.apply(
            {"params": params}, x, train=True, keep=views["keep"], restore=views["restore"]
        )
        target = losses.patchify(x, p)
        loss = losses.mae_loss(pred, target, views["mask"], norm_pix=m.norm_pix)
        metrics = {
            "mask_ratio": jnp.mean(views["mask"]),
            "pred_std": jnp.mean(jnp.std(pred, axis=1)),  # over patches: 0 = one patch for all
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def check(values: dict) -> list[str]:
    out = []
    model, patch = values.get("model.name"), values.get("model.patch_size")
    if model is not None and patch is None:
        out.append(
            f"model.name={model!r}: MAE's encoder runs on the visible patch tokens; "
            "use a ViT (vit_tiny, vit_small, vit_base), as configs/mae.py does"
        )
    crop, ratio = values.get("augment.crop_size"), values.get("mae.mask_ratio")
    if patch is not None and crop is not None and crop >= patch:
        if crop % patch:
            out.append(
                f"augment.crop_size={crop}: not a multiple of the ViT's "
                f"patch_size={patch}, and MAE reconstructs whole patches; use a multiple of "
                f"{patch}"
            )
        elif ratio is not None:
            num = (crop // patch) ** 2
            kept = num_kept(num, ratio)
            if kept < 1:
                out.append(
                    f"mae.mask_ratio={show(ratio)}: masks all {num} patches of a "
                    f"{crop} px crop and the encoder needs one to see; use a smaller ratio"
                )
            elif kept == num:
                out.append(
                    f"mae.mask_ratio={show(ratio)}: masks none of the {num} patches "
                    "of a crop and the loss scores masked patches only; use a larger ratio"
                )
    hidden, heads = values.get("mae.decoder_hidden"), values.get("mae.decoder_num_heads")
    if hidden is not None and heads is not None and hidden % heads:
        out.append(
            f"mae.decoder_num_heads={heads}: the decoder width decoder_hidden="
            f"{hidden} is not divisible by it; use a divisor of {hidden}"
        )
    if hidden is not None and hidden % 4:
        out.append(
            f"mae.decoder_hidden={hidden}: the decoder's sine-cosine position "
            "embeddings need a width divisible by 4; use a multiple of 4"
        )
    return out


def data_problems(config: ml_collections.ConfigDict, data: DataInfo) -> list[str]:
    if not config.mae.norm_pix:
        return []
    p = create_model(config.model.name, **config.model.kwargs).patch_size
    channels = data.image_shape[-1]
    if p * p * channels < 2:
        return [
            f"mae.norm_pix=True: patches of {p}x{p} px with {channels} channel hold one "
            f"value, which cannot be normalised by its own mean and variance; use "
            "--config.model.kwargs.patch_size=2 or more, or --config.mae.norm_pix=False"
        ]
    return []


# ----------------------------------------------------------------------------- pictures


def unpatchify(patches: jax.Array, patch_size: int, grid: tuple[int, int]) -> jax.Array:
    """[N, L, p * p * C] -> [N, gh * p, gw * p, C], the inverse of ``losses.patchify``."""
    n, _, dim = patches.shape
    p = patch_size
    c = dim // (p * p)
    x = patches.reshape(n, grid[0], grid[1], p, p, c)
    return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(n, grid[0] * p, grid[1] * p, c)


def picture_rows(model, variables, images, x: jax.Array, key: jax.Array, config) -> list:
    """The picture rows of a trained MAE for images x [N, S, S, C] in [0, 1]: the image, its
    visible patches (masked ones grey), the prediction of every patch, and the prediction
    of the masked patches pasted among the visible ones (MAE's figure 2).

    With ``mae.norm_pix`` the network predicts normalised patches; they are shown with the
    true patch's mean and standard deviation put back (the target's normalisation undone).
    """
    p = config.model.kwargs.patch_size
    grid = (x.shape[1] // p, x.shape[2] // p)
    masks = random_masking(key, x.shape[0], grid[0] * grid[1], config.mae.mask_ratio)
    pred, _ = model.apply(variables, x, train=False, keep=masks["keep"], restore=masks["restore"])
    target = losses.patchify(x, p)
    if config.mae.norm_pix:
        mean = jnp.mean(target, axis=-1, keepdims=True)
        std = jnp.sqrt(jnp.var(target, axis=-1, keepdims=True, ddof=1) + 1e-6)
        pred = pred * std + mean
    m = masks["mask"][..., None]
    visible = unpatchify(jnp.where(m > 0, 0.5, target), p, grid)
    recon = unpatchify(pred, p, grid)
    pasted = unpatchify(jnp.where(m > 0, pred, target), p, grid)
    return [x, visible, recon, pasted]


MAE = Method(
    name="mae",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    fields={
        **parts.CROP_FLIP_FIELDS,
        "mae.mask_ratio": real(0.0, 1.0, hi_open=True),
        "mae.norm_pix": boolean,
        "mae.decoder_hidden": WIDTH,
        "mae.decoder_depth": integer(1, 256),
        "mae.decoder_num_heads": integer(1, 1024),
        "mae.decoder_mlp_dim": WIDTH,
    },
    check=check,
    data_problems=data_problems,
    picture_rows=picture_rows,
)
