"""Feature extraction: run a jitted model function over an image array in fixed batches."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def extract_features(
    apply_fn: Callable[[jax.Array], jax.Array],
    images: np.ndarray | jax.Array,
    *,
    batch_size: int = 512,
) -> np.ndarray:
    """Maps ``apply_fn`` over ``images`` in batches of one shape and gathers the features.

    Batches have ``min(batch_size, N)`` rows; the last one is zero-padded and
    the padding dropped from the output, so ``apply_fn`` compiles once. The
    next batch is dispatched before the previous result is copied to the host.

    Args:
      apply_fn: jitted function, [b, H, W, C] images (dtype as given) -> [b, D] features.
      images: [N, H, W, C] uint8 or float images.
      batch_size: images per call of ``apply_fn``.

    Returns:
      [N, D] float32 numpy features.
    """
    n = len(images)
    if n == 0:
        raise ValueError("extract_features got no images.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    batch_size = min(batch_size, n)
    outputs = []
    pending = None  # (device features, number of valid rows)
    for start in range(0, n, batch_size):
        batch = np.asarray(images[start : start + batch_size])
        n_valid = len(batch)
        if n_valid < batch_size:
            pad = [(0, batch_size - n_valid)] + [(0, 0)] * (batch.ndim - 1)
            batch = np.pad(batch, pad)
        features = apply_fn(jnp.asarray(batch))
        if pending is not None:
            outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
        pending = (features, n_valid)
    outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
    return np.concatenate(outputs, axis=0)
