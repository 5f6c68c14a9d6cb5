"""The one eval-mode forward pass over the device mesh: ``Predictor``.

Every evaluation, SeLa's relabelling pass, SCAN's neighbour mining and the
picture commands run a trained network over an ``ImageSource`` through this:

- one jitted function per output selector, built once per Predictor and kept
  (``jax.jit`` inside a function that runs every evaluation would retrace);
- batches of one shape: the batch size is rounded up to a multiple of the
  device count and the last batch is padded (so there can be more devices than
  examples), the padding dropped from the output;
- several processes: each reads only its own contiguous slice of every batch
  from the source (``jax.make_array_from_process_local_data``); the output is
  replicated over the mesh, so every process gets the whole result;
- float32 numpy out, the next batch dispatched before the previous result is
  copied to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jssl import augment, sharding
from jssl.data.core import ImageSource

PyTree = Any
# (model, variables, x float32 [b, h, w, C]) -> array [b, ...]
Selector = Callable[[nn.Module, PyTree, jax.Array], jax.Array]


def features(model: nn.Module, variables: PyTree, x: jax.Array) -> jax.Array:
    """The representation evaluation uses: the backbone's pooled output h (``aux["features"]``)."""
    return model.apply(variables, x, train=False)[1]["features"]


def output(model: nn.Module, variables: PyTree, x: jax.Array) -> jax.Array:
    """The model's output (e.g. SimCLR's projection z, clustering heads' logits)."""
    return model.apply(variables, x, train=False)[0]


SELECTORS: dict[str, Selector] = {"features": features, "output": output}


def model_variables(params: PyTree, batch_stats: PyTree) -> dict:
    """Flax variables of a network: its params and, when it has them, BatchNorm statistics."""
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


class Predictor:
    """Eval-mode forward passes of ``model`` over image sources, on ``mesh``.

    Args:
      model: the Flax module; ``apply(variables, x, train=False)`` -> (out, aux).
      mesh: the device mesh ("data" axis).
      crop_size: side of the evaluation view (``augment.eval_view``: resize + centre crop).
      batch_size: images per forward pass (rounded up to a multiple of the device count).
    """

    def __init__(self, model: nn.Module, mesh: Mesh, *, crop_size: int, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        self.mesh = mesh
        self.size = (int(crop_size), int(crop_size))
        self.batch_size = int(batch_size)
        self._compiled: dict[Selector, Callable] = {}

    def _fn(self, select: Selector) -> Callable:
        fn = self._compiled.get(select)
        if fn is None:
            model, size = self.model, self.size

            def run(variables, images):
                x = augment.eval_view(images, size=size)
                return select(model, variables, x).astype(jnp.float32)

            rep = sharding.replicated(self.mesh)
            fn = jax.jit(
                run, in_shardings=(rep, sharding.data_sharded(self.mesh)), out_shardings=rep
            )
            self._compiled[select] = fn
        return fn

    def __call__(
        self,
        variables: PyTree,
        source: ImageSource,
        select: str | Selector = "features",
        *,
        indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """``select`` of every image of ``source`` (or of ``indices``): float32 [N, ...]."""
        select = SELECTORS[select] if isinstance(select, str) else select
        idx = np.arange(len(source)) if indices is None else np.asarray(indices)
        n = len(idx)
        if n == 0:
            raise ValueError("Predictor got no images.")
        devices = self.mesh.devices.size
        bs = -(-min(self.batch_size, n) // devices) * devices
        procs, rank = jax.process_count(), jax.process_index()
        per = bs // procs
        data = sharding.data_sharded(self.mesh)
        fn = self._fn(select)
        outputs, pending = [], None
        for start in range(0, n, bs):
            rows = idx[start : start + bs]
            valid = len(rows)
            rows = np.pad(rows, (0, bs - valid))  # padding reads example 0; dropped below
            local = source.get(rows[rank * per : (rank + 1) * per])
            images = jax.make_array_from_process_local_data(data, local, (bs, *local.shape[1:]))
            result = fn(variables, images)
            if pending is not None:
                outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
            pending = (result, valid)
        outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
        return np.concatenate(outputs, axis=0)
