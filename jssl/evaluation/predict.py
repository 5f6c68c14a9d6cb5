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
  copied to the host;
- or, with ``Predictor.sharded``, the output left on the devices as one global
  array whose rows are split in contiguous blocks over the mesh, never gathered
  to a host (SeLa's relabelling and SCAN's mining at ImageNet scale: the logits
  of every image are [N, heads, K], too large for one host).
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
from jssl.errors import UserError

PyTree = Any
# (model, variables, x float32 [b, h, w, C]) -> array [b, ...]; a selector with a true
# ``per_row`` attribute also takes ``rows`` int32 [b], each image's row in its source (for
# random views drawn per image, whatever the batch it falls in).
Selector = Callable[..., jax.Array]


def features(model: nn.Module, variables: PyTree, x: jax.Array) -> jax.Array:
    """The representation evaluation uses: the backbone's pooled output h (``aux["features"]``)."""
    return model.apply(variables, x, train=False)[1]["features"]


def output(model: nn.Module, variables: PyTree, x: jax.Array) -> jax.Array:
    """The model's output (e.g. SimCLR's projection z, clustering heads' logits)."""
    return model.apply(variables, x, train=False)[0]


SELECTORS: dict[str, Selector] = {"features": features, "output": output}


def _per_row(select: Selector) -> bool:
    return bool(getattr(select, "per_row", False))


def model_variables(params: PyTree, batch_stats: PyTree) -> dict:
    """Flax variables of a network: its params and, when it has them, BatchNorm statistics."""
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


NETWORKS = ("student", "teacher")


def network_variables(state, network: str = "student", *, teacher: str | None = None) -> dict:
    """Flax variables of one network of a TrainState: the trained "student", or the "teacher",
    the EMA copy (``EmaTeacherState``) the method keeps in ``state.method_state[teacher]``
    (``Method.teacher``: DINO's and MoCo's teacher, BYOL's target).

    An EMA copy holds the subtrees it tracks (BYOL's and MoCo v3's hold the backbone and
    the head); the others (their predictor, which the copy never has) are the student's,
    so the whole model applies and the copy's own outputs are exactly its own.
    """
    if network == "student":
        return model_variables(state.params, state.batch_stats)
    if network != "teacher":
        raise ValueError(f"network={network!r}: use one of {NETWORKS}")
    method_state = state.method_state if isinstance(state.method_state, dict) else {}
    ema = method_state.get(teacher) if teacher else None
    if ema is None:
        raise UserError(
            "this run's method keeps no EMA copy of its network (no teacher); use --network student"
        )
    stats = {**(state.batch_stats or {}), **(ema.batch_stats or {})}
    return model_variables({**state.params, **ema.params}, stats)


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

    def _fn(self, select: Selector, gather: bool = True) -> Callable:
        fn = self._compiled.get((select, gather))
        if fn is None:
            model, size = self.model, self.size

            def run(variables, images, *rows):  # rows: only for a per_row selector
                x = augment.eval_view(images, size=size)
                return select(model, variables, x, *rows).astype(jnp.float32)

            rep, data = sharding.replicated(self.mesh), sharding.data_sharded(self.mesh)
            inputs = (rep, data, data) if _per_row(select) else (rep, data)
            fn = jax.jit(run, in_shardings=inputs, out_shardings=rep if gather else data)
            self._compiled[(select, gather)] = fn
        return fn

    def _images(self, source: ImageSource, rows: np.ndarray) -> jax.Array:
        """The global batch of ``rows``, of which this process reads only its own slice."""
        per = len(rows) // jax.process_count()
        rank = jax.process_index()
        local = source.get(rows[rank * per : (rank + 1) * per])
        return jax.make_array_from_process_local_data(
            sharding.data_sharded(self.mesh), local, (len(rows), *local.shape[1:])
        )

    def _batch(self, source: ImageSource, rows: np.ndarray, select: Selector) -> tuple:
        """The arguments of ``select``'s function after the variables: the global batch of
        ``rows``, and for a per_row selector the rows themselves as a global int32 array."""
        images = self._images(source, rows)
        if not _per_row(select):
            return (images,)
        rows = np.asarray(rows, np.int32)
        data = sharding.data_sharded(self.mesh)
        return images, jax.make_array_from_callback(rows.shape, data, lambda i: rows[i])

    def __call__(
        self,
        variables: PyTree,
        source: ImageSource,
        select: str | Selector = "features",
        *,
        indices: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """``select`` of every image of ``source`` (or of ``indices``): float32 [N, ...].

        ``progress(done, n)`` is called at the start and as each batch's results reach the
        host."""
        select = SELECTORS[select] if isinstance(select, str) else select
        idx = np.arange(len(source)) if indices is None else np.asarray(indices)
        n = len(idx)
        if n == 0:
            raise ValueError("Predictor got no images.")
        devices = self.mesh.devices.size
        bs = -(-min(self.batch_size, n) // devices) * devices
        fn = self._fn(select)
        outputs, pending = [], None
        if progress is not None:
            progress(0, n)
        for start in range(0, n, bs):
            rows = idx[start : start + bs]
            valid = len(rows)
            rows = np.pad(rows, (0, bs - valid))  # padding reads example 0; dropped below
            result = fn(variables, *self._batch(source, rows, select))
            if pending is not None:
                outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
                if progress is not None:
                    progress(start, n)
            pending = (result, valid)
        outputs.append(np.asarray(pending[0], np.float32)[: pending[1]])
        if progress is not None:
            progress(n, n)
        return np.concatenate(outputs, axis=0)

    def sharded(
        self,
        variables: PyTree,
        source: ImageSource,
        select: str | Selector = "features",
        *,
        indices: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> jax.Array:
        """``select`` of every image of ``source`` (or of ``indices``), left on the devices.

        Returns one global float32 [N, ...] array sharded like ``sharding.data_sharded``:
        the device at mesh position d holds rows [d * N / D, (d + 1) * N / D). Each batch
        gives every device the next rows of its own block, so the blocks are put together
        on their devices with no communication and no host copy. N must be a multiple of
        the device count D (ValueError otherwise; callers fall back to ``__call__``).
        ``progress(done, n)`` as in ``__call__``.
        """
        select = SELECTORS[select] if isinstance(select, str) else select
        idx = np.arange(len(source)) if indices is None else np.asarray(indices)
        n, devices = len(idx), self.mesh.devices.size
        if n == 0 or n % devices:
            raise ValueError(f"Predictor.sharded needs a multiple of {devices} images, got {n}.")
        block = n // devices
        per_device = min(max(1, self.batch_size // devices), block)  # rows per device per batch
        batches = -(-block // per_device)
        # Within-block positions of every batch; the last batch repeats the block's last row.
        pos = np.minimum(np.arange(batches * per_device), block - 1)
        table = idx.reshape(devices, block)[:, pos].reshape(devices, batches, per_device)
        fn = self._fn(select, gather=False)
        parts: dict[jax.Device, list[jax.Array]] = {}
        previous = None
        if progress is not None:
            progress(0, n)
        for b in range(batches):
            out = fn(variables, *self._batch(source, table[:, b].reshape(-1), select))
            for shard in out.addressable_shards:
                parts.setdefault(shard.device, []).append(shard.data)
            if progress is not None and previous is not None:  # the batch before is done
                jax.block_until_ready(previous)
                progress(min(b * per_device, block) * devices, n)
            previous = out
        if progress is not None:
            jax.block_until_ready(previous)
            progress(n, n)
        shape = (n, *next(iter(parts.values()))[0].shape[1:])
        data = sharding.data_sharded(self.mesh)
        arrays = [  # in the order of the sharding's own device map
            jnp.concatenate(parts[d], axis=0)[:block]
            for d in data.addressable_devices_indices_map(shape)
        ]
        return jax.make_array_from_single_device_arrays(shape, data, arrays)
