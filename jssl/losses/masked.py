"""Masked image modelling losses: MAE's pixel regression and iBOT's masked-patch distillation.

Both score only the masked patch tokens (mask [N, L], 1 = masked):

- MAE (He et al., 2022) regresses the pixels of every masked patch, by
  default normalised per patch (``norm_pix``), and averages over all masked
  patches of the batch;
- iBOT (Zhou et al., 2022), as DINOv2 uses it, distils the teacher's centred,
  sharpened distribution over K prototypes into the student on each masked
  patch token, averaged per image over its masked patches, then over images.

Computations are float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.losses.distillation import teacher_distribution

__all__ = [
    "ibot_patch_loss",
    "mae_loss",
    "patch_distillation_loss",
    "patchify",
    "update_patch_center",
]

_NORM_PIX_EPS = 1e-6  # MAE: (var + 1e-6) ** 0.5


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[N, H, W, C] images -> [N, L, p * p * C] patches, as MAE's patchify.

    Patches are in row-major order over the (H / p) x (W / p) grid, and each
    patch's pixels are flattened row by row, channels last ((p, p, C)), so
    patch l of an NHWC image is MAE's patch l of the same NCHW image.
    """
    if images.ndim != 4:
        raise ValueError(f"patchify expects images [N, H, W, C], got {images.shape}")
    n, h, w, c = images.shape
    p = int(patch_size)
    if p < 1 or h % p or w % p:
        raise ValueError(f"patch_size {patch_size} must divide H = {h} and W = {w}")
    x = images.reshape(n, h // p, p, w // p, p, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))  # [N, h, w, p, p, C]
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def _check_mask(name: str, tokens_shape, mask: jax.Array) -> None:
    if len(tokens_shape) != 3 or mask.shape != tuple(tokens_shape[:2]):
        raise ValueError(
            f"{name} expects [N, L, *] tokens and a mask [N, L], got tokens {tuple(tokens_shape)} "
            f"and mask {mask.shape}"
        )


def mae_loss(
    pred: jax.Array, target: jax.Array, mask: jax.Array, *, norm_pix: bool = True
) -> jax.Array:
    """MAE's reconstruction loss: per-patch MSE, averaged over the masked patches.

    With ``norm_pix`` each target patch t [P] becomes
    (t - mean(t)) / (unbiased var(t) + 1e-6) ** 0.5 (MAE's norm_pix_loss); then
      loss = sum_{n, l} mask_nl * mean_P (pred - target)^2 / sum_{n, l} mask_nl,
    the mean over every masked patch of the (global) batch, as MAE's
    ``(loss * mask).sum() / mask.sum()``. A batch without masked patches gives
    0 (the count is floored at 1) instead of MAE's NaN.

    Args:
      pred: [N, L, P] predicted pixels of every patch (P = p * p * C).
      target: [N, L, P] true pixels, e.g. ``patchify(images, p)``.
      mask: [N, L], 1 (or True) where the patch was masked.
      norm_pix: normalise each target patch by its mean and std (MAE: True).

    Returns:
      Scalar float32 loss.
    """
    if pred.shape != target.shape:
        raise ValueError(f"mae_loss: pred {pred.shape} and target {target.shape} differ")
    _check_mask("mae_loss", pred.shape, mask)
    target = jax.lax.stop_gradient(target.astype(jnp.float32))
    if norm_pix:
        if target.shape[-1] < 2:
            raise ValueError("mae_loss with norm_pix needs patches of at least 2 pixels")
        mean = jnp.mean(target, axis=-1, keepdims=True)
        var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / jnp.sqrt(var + _NORM_PIX_EPS)
    per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)  # [N, L]
    m = mask.astype(jnp.float32)
    return jnp.sum(per_patch * m) / jnp.maximum(jnp.sum(m), 1.0)


def ibot_patch_loss(
    student_patches: jax.Array,
    teacher_patches: jax.Array,
    mask: jax.Array,
    center: jax.Array,
    *,
    student_temp: float | jax.Array,
    teacher_temp: float | jax.Array,
) -> jax.Array:
    """iBOT's masked-patch loss as in DINOv2 (iBOTPatchLoss).

    With q = softmax((teacher - center) / teacher_temp) (no gradient) and
    log p = log_softmax(student / student_temp) over K,
      loss = mean_n [ sum_l mask_nl * (-sum_k q_nlk log p_nlk) / max(1, sum_l mask_nl) ],
    the mean over all N images, so an image without masked patches counts 0.

    Args:
      student_patches: [N, L, K] student logits of the patch tokens (of the
        masked input).
      teacher_patches: [N, L, K] teacher logits of the same patch tokens (of
        the unmasked input).
      mask: [N, L], 1 (or True) where the student's patch was masked.
      center: [K] running mean of the teacher's patch logits (iBOT keeps its
        own centre, apart from DINO's).
      student_temp: student temperature (DINOv2: 0.1).
      teacher_temp: teacher temperature (DINOv2: 0.04 -> 0.07).

    Returns:
      Scalar float32 loss. The teacher side carries no gradient.
    """
    if student_patches.shape != teacher_patches.shape:
        raise ValueError(
            f"ibot_patch_loss: student_patches {student_patches.shape} and teacher_patches "
            f"{teacher_patches.shape} differ"
        )
    _check_mask("ibot_patch_loss", student_patches.shape, mask)
    if center.shape != student_patches.shape[-1:]:
        raise ValueError(f"center must be [K] = [{student_patches.shape[-1]}], got {center.shape}")
    q = teacher_distribution(teacher_patches, center, teacher_temp=teacher_temp)
    return patch_distillation_loss(student_patches, q, mask, student_temp=student_temp)


def patch_distillation_loss(
    student_patches: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    *,
    student_temp: float | jax.Array,
) -> jax.Array:
    """``ibot_patch_loss`` against given teacher targets [N, L, K] (centred and sharpened, or
    ``sinkhorn_knopp_teacher``'s over the masked patches): the per-image mean over its masked
    patches of -sum_k targets log_softmax(student / student_temp), then the mean over images."""
    _check_mask("patch_distillation_loss", student_patches.shape, mask)
    log_p = jax.nn.log_softmax(student_patches.astype(jnp.float32) / student_temp, axis=-1)
    ce = -jnp.sum(targets * log_p, axis=-1)  # [N, L]
    m = mask.astype(jnp.float32)
    per_image = jnp.sum(ce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    return jnp.mean(per_image)


def update_patch_center(
    center: jax.Array, teacher_patches: jax.Array, mask: jax.Array, *, momentum: float
) -> jax.Array:
    """iBOT's patch centre: momentum * center + (1 - momentum) * the mean teacher logits of
    the masked patches of the (global) batch (DINOv2's iBOTPatchLoss.update_center).

    Args:
      center: [K].
      teacher_patches: [N, L, K] teacher logits of the patch tokens.
      mask: [N, L], 1 where the student's patch was masked (the only patches averaged).
      momentum: centre momentum (DINOv2: 0.9).

    Returns:
      [K] float32 under stop_gradient; ``center`` unchanged when no patch is masked.
    """
    _check_mask("update_patch_center", teacher_patches.shape, mask)
    m = mask.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher_patches.astype(jnp.float32))
    count = jnp.sum(m)
    mean = jnp.sum(m[..., None] * t, axis=(0, 1)) / jnp.maximum(count, 1.0)
    new = momentum * center + (1.0 - momentum) * mean
    return jax.lax.stop_gradient(jnp.where(count > 0, new, center.astype(jnp.float32)))
