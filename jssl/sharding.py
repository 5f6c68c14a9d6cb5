"""Device mesh and NamedSharding helpers for data parallelism.

One 1-D mesh over all devices with axis "data": the batch is sharded on it and
everything else (parameters, optimiser state, method state) is replicated.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jssl.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Fails early, with the fix, when the batch cannot be split evenly."""
    n = mesh.devices.size
    if global_batch_size % n:
        raise UserError(
            f"batch_size={global_batch_size} is not divisible by the {n} devices of the mesh; "
            f"set --config.batch_size to a multiple of {n}."
        )


def put_global_batch(local_batch, mesh: Mesh):
    """Builds globally sharded arrays from this process's slice of the global batch.

    With one process the local batch is the global batch; with several, each
    process passes its own contiguous slice and the result is one global array.
    """
    sharding = data_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
