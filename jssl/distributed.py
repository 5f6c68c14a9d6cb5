"""Several processes (hosts) on ``jax.distributed``: joining, and agreeing on host decisions.

Every process runs the same ``train.py`` command. With no flags, ``initialize``
relies on JAX's cluster auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes)
and runs as one process when none is detected; with ``--coordinator_address
--num_processes --process_id`` it passes them on. After that each process reads
only its own slice of every global batch (``jssl.data.host_batch_indices``),
all of them save into one orbax checkpoint, and process 0 alone writes metrics,
JSON files and the progress bar (``is_primary``).

If a process dies, the others stop at their next collective or when the
coordination service misses its heartbeats (``heartbeat_timeout`` seconds) and
exit with an error; rerunning every process resumes from the last complete
checkpoint.
"""

from __future__ import annotations

import functools
import re
import socket
import time

import jax

from jssl.errors import UserError

_ADDRESS = re.compile(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}")


class DistributedError(UserError):
    """The processes of a run cannot form one job (bad flags, unreachable coordinator)."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """Joins this process to the job (before anything touches a device).

    No arguments: JAX's cluster auto-detection, or a single process if none is
    detected. Otherwise all three are needed.
    """
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    timeouts = {"initialization_timeout": timeout, "heartbeat_timeout_seconds": heartbeat_timeout}
    if all(v is None for v in given.values()):
        try:
            jax.distributed.initialize(**timeouts)
        except ValueError:  # no cluster detected: "coordinator_address should be defined"
            return
        except Exception as err:
            raise DistributedError(
                f"JAX detected a cluster but could not join it ({_short(err)}); pass "
                "--coordinator_address=HOST:PORT --num_processes=N --process_id=I"
            ) from err
        return
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise DistributedError(
            f"{', '.join(missing)} missing: give --coordinator_address=HOST:PORT, "
            "--num_processes=N and --process_id=I together (or none, for auto-detection)"
        )
    if not _ADDRESS.fullmatch(coordinator_address):
        raise DistributedError(
            f"--coordinator_address={coordinator_address!r} is not HOST:PORT (e.g. 10.0.0.1:1234)"
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise DistributedError(
            f"--process_id={process_id} must be in 0..{num_processes - 1} for "
            f"--num_processes={num_processes}"
        )
    if process_id != 0:  # JAX aborts the process when the coordinator never answers
        _wait_for_coordinator(coordinator_address, process_id, num_processes, timeout)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            **timeouts,
        )
    except Exception as err:
        raise DistributedError(
            f"process {process_id} of {num_processes} could not join the coordinator at "
            f"{coordinator_address} within {timeout} s ({_short(err)}); check that process 0 "
            "runs with the same --coordinator_address and that the address is reachable"
        ) from err


def started() -> bool:
    """Whether this process already started JAX's backends (then it can no longer join a
    job: a command called as a library function inside a running program)."""
    from jax._src import xla_bridge  # no public equivalent in jax 0.10 - 0.12

    check = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(check and check())


def _wait_for_coordinator(address: str, process_id: int, num_processes: int, timeout: int):
    """Returns once process 0's coordination service accepts connections at ``address``."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {process_id} of {num_processes} could not join the coordinator at "
                    f"{address} within {timeout} s ({_short(err)}); check that process 0 runs "
                    "with the same --coordinator_address and that the address is reachable"
                ) from None
            time.sleep(0.25)


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def is_primary() -> bool:
    """Process 0: the one that writes metrics, JSON files and prints."""
    return jax.process_index() == 0


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process: for host decisions that read files another
    process may be writing (e.g. whether to evaluate the untrained network)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(jax.numpy.asarray(bool(flag))))


@functools.cache
def _max_fn(mesh):
    from jssl import sharding

    return jax.jit(jax.numpy.max, out_shardings=sharding.replicated(mesh))


def max_over_processes(mesh, value: int) -> jax.Array:
    """Dispatches, without waiting, the largest of every process's ``value``: a replicated
    int32 scalar on ``mesh``. Every process must call it at the same points, in the same
    order (it is a collective); reading it waits for the other processes to have called it.

    The train loop votes this way on stopping (a signal or a deadline reaches one process
    first), so that every process stops after the same step with the same reason.
    """
    import numpy as np

    from jssl import sharding

    local = np.full((len(mesh.local_devices),), value, np.int32)
    votes = jax.make_array_from_process_local_data(
        sharding.data_sharded(mesh), local, (mesh.devices.size,)
    )
    return _max_fn(mesh)(votes)
