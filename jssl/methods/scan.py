"""SCAN (Van Gansbeke et al., 2020): clustering by mined nearest neighbours.

The second of SCAN's three stages (pretext -> SCAN -> self-labelling, each an
ordinary jssl run; ``configs/scan.py`` chains them with ``config.stages`` and
``config.init_from``):

- the run starts from the pretext run's backbone (``config.init_from``:
  ``params=("backbone",)``), which the trainer restores and transplants;
- ``prepare`` embeds the training set with the restored pretext network (in
  its projection space as SCAN does, or its backbone features:
  ``config.scan.mine_on``) and mines the k nearest neighbours of every image
  (cosine similarity, the image itself excluded; chunked top-k on device,
  jitted);
- H linear heads are trained with ``scan_loss`` on (anchor, neighbour) pairs,
  one random neighbour per example and step drawn from (seed, step); the head
  with the lowest running loss (no labels) is reported by the ``cluster_heads``
  evaluator.

Exact resume: the neighbours are a deterministic function of the pretext
checkpoint; they are cached in ``<workdir>/neighbors.npz``, and a digest of
them is part of the method state, so a resumed run whose neighbours differ
from the saved ones stops with an error instead of silently training on other
pairs. Self-labelling is the method ``selflabel`` (``jssl.methods.selflabel``).
"""

from __future__ import annotations

import functools
import os
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jssl import distributed, evaluation, losses, sharding
from jssl.checks import NON_NEGATIVE, integer, one_of
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import DataInfo, HostObject, Method, apply_train
from jssl.models import EncoderWithHead

NEIGHBORS_FILE = "neighbors.npz"
MINE_ON = ("auto", "features", "projection")


# ----------------------------------------------------------------------------- neighbours


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "chunk", "mesh"))
def _topk_chunk(bank: jax.Array, start: jax.Array, n: jax.Array, *, k: int, chunk: int, mesh):
    """Indices [chunk, k] of the k most cosine-similar rows of ``bank`` ([M, D], rows split
    over the mesh, rows >= n padding) for the query rows [s, s + chunk) of the bank,
    s = min(start, M - chunk); each query itself excluded.

    Each device ranks its own rows (its top min(k, rows) by similarity), then the
    devices' candidates are all-gathered ([chunk, devices x k]) and ranked again.
    lax.top_k puts equal values in index order and the candidates come in device
    order, so the result is that of one top-k over the whole bank.
    """
    s = jnp.minimum(start, bank.shape[0] - chunk)
    queries = jax.lax.dynamic_slice_in_dim(bank, s, chunk)  # every device gets the chunk

    def rank(queries, bank_rows):
        local = bank_rows.shape[0]
        offset = jax.lax.axis_index(sharding.DATA_AXIS) * local
        sim = jnp.matmul(
            _unit(queries), _unit(bank_rows).T, precision=jax.lax.Precision.HIGHEST
        )  # [chunk, local]
        cols = (offset + jnp.arange(local))[None, :]
        mask = (cols == (s + jnp.arange(chunk))[:, None]) | (cols >= n)
        values, idx = jax.lax.top_k(jnp.where(mask, -jnp.inf, sim), min(k, local))
        values = jax.lax.all_gather(values, sharding.DATA_AXIS, axis=1, tiled=True)
        idx = jax.lax.all_gather(idx + offset, sharding.DATA_AXIS, axis=1, tiled=True)
        best = jax.lax.top_k(values, k)[1]
        return jnp.take_along_axis(idx, best, axis=1).astype(jnp.int32)

    spec = jax.sharding.PartitionSpec
    return jax.shard_map(
        rank,
        mesh=mesh,
        in_specs=(spec(), spec(sharding.DATA_AXIS)),
        out_specs=spec(),
        check_vma=False,
    )(queries, bank)


def mine_neighbors(
    features, *, k: int, mesh=None, chunk_size: int = 512, progress=None
) -> np.ndarray:
    """The k nearest neighbours of every row by cosine similarity, itself excluded.

    The bank of features stays split over the mesh's devices, N / D rows each
    (``Predictor.sharded`` output is used as it is; a host array is zero-padded to
    a multiple of D and put there). Memory per device is N / D x dim plus a
    [chunk_size, N / D] block of similarities, so mining scales with the device
    count, and with several processes no host holds the N x dim features.

    Args:
      features: [N, D] features: numpy, or a global jax.Array sharded like
        ``sharding.data_sharded(mesh)``.
      k: neighbours per example, < N.
      mesh: device mesh (default: the first device alone).
      chunk_size: query rows ranked at a time.
      progress: called as (rows ranked, N) after each chunk.

    Returns:
      [N, k] int32 numpy indices, most similar first, on every process.
    """
    n = int(features.shape[0])
    if not 0 < k < n:
        raise UserError(f"Mining {k} neighbours needs more than {k} examples, got {n}.")
    mesh = mesh if mesh is not None else sharding.make_mesh(jax.devices()[:1])
    rows = -(-n // mesh.devices.size) * mesh.devices.size
    bank = features
    if not (isinstance(bank, jax.Array) and bank.sharding == sharding.data_sharded(mesh)):
        bank = np.pad(np.asarray(bank, np.float32), ((0, rows - n), (0, 0)))
        bank = jax.device_put(bank, sharding.data_sharded(mesh))
    chunk = min(chunk_size, n)
    out = []
    for start in range(0, n, chunk):
        idx = _topk_chunk(bank, jnp.int32(start), jnp.int32(n), k=k, chunk=chunk, mesh=mesh)
        first = start - min(start, rows - chunk)
        out.append(np.asarray(idx)[first : first + min(chunk, n - start)])
        if progress is not None:
            progress(min(start + chunk, n), n)
    return np.concatenate(out)


def neighbor_accuracy(neighbors: np.ndarray, labels: np.ndarray) -> float:
    """Share of mined neighbours with the anchor's label (a diagnostic; uses labels)."""
    labels = np.asarray(labels)
    return float(np.mean(labels[neighbors] == labels[:, None]))


def digest(neighbors: np.ndarray) -> int:
    """A 31-bit checksum of the neighbour table (fits int32 method state)."""
    return zlib.crc32(np.ascontiguousarray(neighbors, np.int32).tobytes()) & 0x7FFFFFFF


def _mine_auto(model, variables, x) -> jax.Array:
    """The projection (SCAN mines in SimCLR's projection space) when the model's output is an
    embedding [B, D], else the backbone features."""
    out, aux = model.apply(variables, x, train=False)
    return out if out.ndim == 2 else aux["features"]


MINING_SELECTORS = {
    "auto": _mine_auto,
    "projection": evaluation.predict.output,
    "features": evaluation.predict.features,
}


def mining_features(init_run, source, mine_on: str, progress=None):
    """[N, D] embedding of ``source`` by the restored pretext run ``init_run``: left on the
    devices, split by rows, when N is a multiple of the device count, else numpy.
    ``progress(done, n)`` as the Predictor's."""
    devices = init_run.experiment.mesh.devices.size
    sharded = len(source) % devices == 0
    x = init_run.predict(source, MINING_SELECTORS[mine_on], sharded=sharded, progress=progress)
    if x.ndim != 2:
        raise UserError(
            f"The pretext model's output has shape {x.shape[1:]} per image, not [D]; "
            "use --config.scan.mine_on=features."
        )
    return x


def load_or_mine(config, run, ctx) -> np.ndarray:
    """The [N, k] neighbour table: from ``<workdir>/neighbors.npz`` when it belongs to this
    pretext checkpoint and k, else mined (and cached)."""
    s = config.scan
    init_run = ctx.init_run
    if init_run is None:
        raise UserError(
            "SCAN needs a finished pretext run: pass --config.init_from.workdir=W, e.g. after "
            "python train.py --config=configs/simclr.py:digits --workdir=W."
        )
    pretext_step = int(jax.device_get(init_run.state.step))
    path = os.path.join(run.workdir, NEIGHBORS_FILE) if run.workdir else None
    cached = None
    if path and os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            cached = (f["neighbors"], int(f["pretext_step"]))
        if cached[0].shape != (run.num_examples, s.num_neighbors) or cached[1] != pretext_step:
            logging.warning("Ignoring %s: it belongs to another pretext checkpoint or k.", path)
            cached = None
    # Process 0's answer for all: mining is a collective that every process must join.
    if distributed.agree(cached is not None):
        return cached[0]
    with ctx.phase("SCAN: embedding the training images with the pretext run") as report:
        features = mining_features(init_run, ctx.train, s.mine_on, progress=report)
    with ctx.phase(f"SCAN: mining {s.num_neighbors} nearest neighbours of each image") as report:
        neighbors = mine_neighbors(
            features,
            k=s.num_neighbors,
            mesh=ctx.mesh,
            chunk_size=config.eval.batch_size,
            progress=report,
        )
    if path and distributed.is_primary():
        os.makedirs(run.workdir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, neighbors=neighbors, pretext_step=np.int64(pretext_step))
        os.replace(tmp, path)
    return neighbors


class ScanNeighbors(HostObject):
    """SCAN's host-side state: the mined neighbour table of the training set.

    ``batch_extras`` adds one random mined neighbour image per example, drawn
    from (seed, step) for the whole global batch (so the choice does not depend
    on the number of processes); ``update`` checks once that the run trains on
    the neighbours its checkpoint was trained on; ``metrics`` reports the
    share of neighbours with the anchor's label (a diagnostic).
    """

    def __init__(self, neighbors: np.ndarray, config: ml_collections.ConfigDict, train, mesh):
        self.neighbors = neighbors
        self.mesh = mesh
        self.digest = digest(neighbors)
        self.agreement = neighbor_accuracy(neighbors, train.labels)
        self.train = train
        self.seed, self.batch_size = config.seed, config.batch_size
        self._checked = False

    def batch_extras(self, indices: np.ndarray, step: int) -> dict:
        rng = np.random.default_rng((self.seed, int(step), 0x5CA7))
        choice = rng.integers(0, self.neighbors.shape[1], size=self.batch_size)
        per = len(indices)
        start = jax.process_index() * per
        picked = self.neighbors[indices, choice[start : start + per]]
        return {"neighbor": self.train.get(picked)}

    def update(self, state, step: int):
        if self._checked:
            return state
        self._checked = True
        ms = state.method_state
        saved = int(jax.device_get(ms["neighbors_digest"]))
        if saved == 0:  # a fresh run: record the table it trains on
            rep = sharding.replicated(self.mesh)
            value = jax.device_put(jnp.int32(self.digest), rep)
            return state.replace(method_state={**ms, "neighbors_digest": value})
        if saved != self.digest:
            raise UserError(
                "The mined neighbours differ from those this run was trained with (the pretext "
                f"checkpoint, config.scan.num_neighbors or {NEIGHBORS_FILE} changed). Restore "
                "the pretext run, or start SCAN in a new --workdir."
            )
        return state

    def metrics(self) -> dict:
        return {"neighbor_acc": evaluation.Metric(self.agreement, "neighbour label agreement")}


def prepare(config: ml_collections.ConfigDict, run, ctx) -> ScanNeighbors:
    neighbors = load_or_mine(config, run, ctx)
    host = ScanNeighbors(neighbors, config, ctx.train, ctx.mesh)
    logging.warning(
        "SCAN: %d neighbours per image mined from %s; %.1f%% share the image's class.",
        neighbors.shape[1],
        ctx.init_run.workdir if ctx.init_run is not None else run.workdir,
        100 * host.agreement,
    )
    return host


# ----------------------------------------------------------------------------- method


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    s = config.scan
    if s.mine_on not in MINE_ON:
        raise UserError(f"config.scan.mine_on must be one of {MINE_ON}, got {s.mine_on!r}.")
    return parts.build_clustering_model(config, num_heads=s.num_heads, num_clusters=s.num_clusters)


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    k1, k2 = jax.random.split(key)
    policy = parts.simclr_policy(config)
    return parts.one_view(k1, batch["image"], **policy), parts.one_view(
        k2, batch["neighbor"], **policy
    )


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run=None) -> dict:
    return {
        "head_loss": jnp.zeros((config.scan.num_heads,), jnp.float32),
        # Checksum of the mined neighbours the run trains on (set by the host object).
        "neighbors_digest": jnp.zeros((), jnp.int32),
    }


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    s = config.scan
    momentum = s.head_loss_momentum

    def scan_loss_fn(params, batch_stats, views, method_state, step, key):
        anchors, neighbors = views
        b = anchors.shape[0]
        # One pass over anchors and neighbours: BatchNorm statistics of the 2B batch.
        x = jnp.concatenate([anchors, neighbors])
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)  # [H, 2B, K]
        total, consistency, entropy = losses.scan_loss(
            logits[:, :b], logits[:, b:], entropy_weight=s.entropy_weight
        )  # each [H]
        method_state = parts.update_head_loss(method_state, total, step, momentum)
        best = jnp.argmin(total)
        metrics = {
            **parts.head_metrics(logits[:, :b], total),
            "consistency": consistency[best],
            "entropy": entropy[best],
            "h_std": losses.embedding_std(aux["features"]),
        }
        # SCAN sums the heads' losses.
        return jnp.sum(total), (batch_stats, method_state, metrics)

    return scan_loss_fn


def data_problems(config: ml_collections.ConfigDict, data: DataInfo) -> list[str]:
    k, n = config.scan.num_neighbors, data.num_examples
    if k >= n:
        return [
            f"scan.num_neighbors={k}: needs more than that many training "
            f"examples ({data.name} has {n}); use at most {n - 1}"
        ]
    return []


SCAN = Method(
    name="scan",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    prepare=prepare,
    collapse_warnings=parts.cluster_collapse_warnings("scan"),
    evaluators=parts.CLUSTERING_EVALUATORS,
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.clustering_fields("scan"),
        "scan.num_heads": integer(1, 1024),
        "scan.entropy_weight": NON_NEGATIVE,
        "scan.num_neighbors": integer(1),
        "scan.mine_on": one_of(MINE_ON, "scan.mine_on"),
    },
    data_problems=data_problems,
)
