"""SCAN (Van Gansbeke et al., 2020): clustering by mined nearest neighbours, then self-labelling.

Three stages, each an ordinary jssl run with its own workdir, checkpoints and
evaluation:

1. pretext: any finished jssl run (SimCLR by default), given as
   ``config.pretext_workdir``. Left empty, the pretext run is trained first
   from the embedded ``config.pretext`` config in ``<workdir>/pretext`` (or
   resumed there; a finished one is reused as is).
2. ``config.scan.stage = "scan"``: ``prepare`` restores the pretext checkpoint
   (its own config.json builds its model), embeds the training set (in the
   pretext's projection space as SCAN does, or its backbone features:
   ``config.scan.mine_on``) and mines the k nearest neighbours of every image
   (cosine similarity, the image itself excluded; chunked top-k on device,
   jitted). The backbone
   starts from the pretext parameters; H linear heads are trained with
   ``scan_loss`` on (anchor, neighbour) pairs, one random neighbour per example
   and step drawn from (seed, step). The head with the lowest loss (EMA, no
   labels) is reported.
3. ``config.scan.stage = "selflabel"``: starts from a finished SCAN-stage run
   (``config.scan.scan_workdir``; left empty, the embedded ``config.scan_stage``
   config is run in ``<workdir>/scan``), keeps its backbone and lowest-loss head,
   and trains with cross-entropy on the examples whose weak-view confidence
   exceeds ``config.scan.selflabel.threshold`` (0.99), evaluated on strongly
   augmented views (``config.augment``) with class balancing.

Exact resume: the neighbours are a deterministic function of the pretext
checkpoint; they are cached in ``<workdir>/neighbors.npz`` when the workdir is
known, and a digest of them is part of the method state, so a resumed run
whose neighbours differ from the saved ones stops with an error instead of
silently training on other pairs.
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

from jssl import augment, evaluation, losses, sharding
from jssl.checkpoint import Checkpointer, load_saved_config
from jssl.errors import UserError
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.methods.sela import (
    build_clustering_model,
    evaluate_heads,
    head_metrics,
    make_collapse_warnings,
    one_view,
    update_head_loss,
)
from jssl.methods.simclr import policy_kwargs

STAGES = ("scan", "selflabel")
NEIGHBORS_FILE = "neighbors.npz"
# Data fields that must agree between the pretext run and the SCAN run.
_DATA_FIELDS = ("name", "path", "tfds_name", "train_split", "image_size")


# ----------------------------------------------------------------------------- earlier runs


def _tuples(x):
    """JSON lists back to tuples (config tuples such as model widths)."""
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def run_finished(workdir: str) -> bool:
    """True when ``workdir`` holds a run that trained to its end (its final evaluation exists)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return False
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
    return bool(steps) and os.path.exists(os.path.join(workdir, f"eval_{max(steps)}.json"))


def ensure_run(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Trains (or resumes) ``config`` in ``workdir`` unless it already finished; returns workdir."""
    from jssl import trainer  # a module-level import would be circular

    if not run_finished(workdir):
        logging.warning("Running the %s stage in %s first", config.method, workdir)
        print(f"{config.method} stage: {workdir}", flush=True)
        trainer.train_and_evaluate(config, workdir)
    return workdir


def restore_run(run_dir: str, *, dataset, devices):
    """(config, Experiment, TrainState) of the latest checkpoint of a finished jssl run.

    The run's own config.json builds its model; ``dataset`` is reused when
    given (it must be the same data), else loaded from that config. The
    Experiment is built with ``restore_only=True``, so the run's method does no
    stage work (mining, earlier stages) in prepare.
    """
    from jssl import trainer

    saved = load_saved_config(run_dir)
    if saved is None:
        raise UserError(
            f"{run_dir} holds no jssl run (no config.json); give the workdir of a finished run, "
            "e.g. one of python train.py --config=configs/simclr.py:digits --workdir=W."
        )
    config = ml_collections.ConfigDict(_tuples(saved))
    exp = trainer.Experiment(config, devices, dataset=dataset, restore_only=True)
    ckpt = Checkpointer(run_dir, keep=config.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            raise UserError(f"{run_dir} has no checkpoint yet; train it first.")
        state = ckpt.restore(exp.init_state())
    finally:
        ckpt.close()
    return config, exp, state


def _check_same_data(source: ml_collections.ConfigDict, config: ml_collections.ConfigDict, what):
    diffs = [
        f"data.{f}: {source.data[f]!r} there, {config.data[f]!r} here"
        for f in _DATA_FIELDS
        if source.data.get(f) != config.data.get(f)
    ]
    if diffs:
        raise UserError(
            f"The {what} run was trained on other data ({'; '.join(diffs)}); "
            "use the same --config.data.* settings."
        )


def _transplant(tree: dict, parts: dict, what: str) -> dict:
    """``tree`` with its top-level subtrees replaced by ``parts``, checking shapes."""
    out = dict(tree)
    for name, new in parts.items():
        old = tree.get(name)
        same = old is not None and jax.tree.structure(old) == jax.tree.structure(new)
        if same:
            same = all(
                a.shape == b.shape
                for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
            )
        if not same:
            raise UserError(
                f"The {what} run's {name!r} parameters do not fit this model; set "
                "--config.model.name / --config.model.kwargs.* as in that run's config.json."
            )
        out[name] = new
    return out


# ----------------------------------------------------------------------------- neighbours


@functools.partial(jax.jit, static_argnames=("k",))
def _topk_chunk(chunk: jax.Array, start: jax.Array, bank: jax.Array, *, k: int) -> jax.Array:
    """Indices [c, k] of the k most cosine-similar rows of bank [N, D] (self excluded)."""
    sim = jnp.matmul(chunk, bank.T, precision=jax.lax.Precision.HIGHEST)  # [c, N]
    rows = start + jnp.arange(chunk.shape[0])
    sim = jnp.where(jnp.arange(bank.shape[0])[None, :] == rows[:, None], -jnp.inf, sim)
    return jax.lax.top_k(sim, k)[1].astype(jnp.int32)


def mine_neighbors(features, *, k: int, mesh=None, chunk_size: int = 512) -> np.ndarray:
    """The k nearest neighbours of every row by cosine similarity, itself excluded.

    Memory is bounded by chunks of ``chunk_size`` rows ([chunk, N] similarities
    at a time); chunks are zero-padded to one shape, so the top-k compiles
    once, and sharded over ``mesh``'s "data" axis when given.

    Args:
      features: [N, D] features.
      k: neighbours per example, < N.
      mesh: optional device mesh (chunk rows sharded, the bank replicated).
      chunk_size: rows per chunk (rounded up to a multiple of the device count).

    Returns:
      [N, k] int32 numpy indices, most similar first.
    """
    x = np.asarray(features, np.float32)
    n = len(x)
    if not 0 < k < n:
        raise UserError(f"Mining {k} neighbours needs more than {k} examples, got {n}.")
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    devices = mesh.devices.size if mesh is not None else 1
    chunk_size = -(-min(chunk_size, n) // devices) * devices
    if mesh is not None:
        bank = jax.device_put(x, sharding.replicated(mesh))
        put = lambda c: jax.device_put(c, sharding.data_sharded(mesh))
    else:
        bank, put = jnp.asarray(x), jnp.asarray
    out = []
    for start in range(0, n, chunk_size):
        chunk = x[start : start + chunk_size]
        valid = len(chunk)
        chunk = np.pad(chunk, ((0, chunk_size - valid), (0, 0)))
        idx = _topk_chunk(put(chunk), jnp.int32(start), bank, k=k)
        out.append(np.asarray(idx)[:valid])
    return np.concatenate(out)


def neighbor_accuracy(neighbors: np.ndarray, labels: np.ndarray) -> float:
    """Share of mined neighbours with the anchor's label (a diagnostic; uses labels)."""
    labels = np.asarray(labels)
    return float(np.mean(labels[neighbors] == labels[:, None]))


def digest(neighbors: np.ndarray) -> int:
    """A 31-bit checksum of the neighbour table (fits int32 method state)."""
    return zlib.crc32(np.ascontiguousarray(neighbors, np.int32).tobytes()) & 0x7FFFFFFF


def _pretext_features(pconfig, pexp, pstate, images, *, mine_on: str) -> np.ndarray:
    size = (pconfig.augment.crop_size, pconfig.augment.crop_size)
    variables = {"params": pstate.params}
    if pstate.batch_stats:
        variables["batch_stats"] = pstate.batch_stats

    @jax.jit
    def features(variables, images):
        out, aux = pexp.model.apply(variables, augment.eval_view(images, size=size), train=False)
        # "auto": the projection (SCAN mines in SimCLR's projection space) when the
        # pretext model's output is an embedding [B, D], else the backbone features.
        use_out = mine_on == "projection" or (mine_on == "auto" and out.ndim == 2)
        x = out if use_out else aux["features"]
        if x.ndim != 2:
            raise UserError(
                f"The pretext model's output has shape {x.shape}, not [B, D]; "
                "use --config.scan.mine_on=features."
            )
        return x.astype(jnp.float32)

    data_sharding = sharding.data_sharded(pexp.mesh)
    fn = lambda im: features(variables, jax.device_put(im, data_sharding))
    return evaluation.extract_features(fn, images, batch_size=pconfig.eval.batch_size)


def _load_or_mine(exp, pconfig, pexp, pstate, pretext_step: int) -> np.ndarray:
    s = exp.config.scan
    workdir = exp.workdir
    path = os.path.join(workdir, NEIGHBORS_FILE) if workdir else None
    n = len(exp.dataset.train.labels)
    if path and os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            cached = (f["neighbors"], int(f["pretext_step"]))
        if cached[0].shape == (n, s.num_neighbors) and cached[1] == pretext_step:
            return cached[0]
        logging.warning("Ignoring %s: it belongs to another pretext checkpoint or k.", path)
    features = _pretext_features(pconfig, pexp, pstate, exp.dataset.train.images, mine_on=s.mine_on)
    neighbors = mine_neighbors(
        features, k=s.num_neighbors, mesh=exp.mesh, chunk_size=exp.config.eval.batch_size
    )
    if path:
        tmp = path + ".tmp.npz"
        np.savez(tmp, neighbors=neighbors, pretext_step=np.int64(pretext_step))
        os.replace(tmp, path)
    return neighbors


# ----------------------------------------------------------------------------- method


def _check_config(config: ml_collections.ConfigDict) -> None:
    s = config.scan
    if s.stage not in STAGES:
        raise UserError(f"config.scan.stage must be one of {STAGES}, got {s.stage!r}.")
    if s.mine_on not in ("auto", "features", "projection"):
        raise UserError(
            f"config.scan.mine_on must be 'auto', 'features' or 'projection', got {s.mine_on!r}."
        )


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    _check_config(config)
    s = config.scan
    # The self-labelling stage keeps one head: the SCAN stage's lowest-loss head.
    heads = s.num_heads if s.stage == "scan" else 1
    return build_clustering_model(config, num_heads=heads, num_clusters=s.num_clusters)


def weak_policy(config: ml_collections.ConfigDict) -> dict:
    """Crop and flip only: the view whose confident predictions become labels."""
    return dict(policy_kwargs(config), scale=tuple(config.scan.selflabel.weak_scale),
                jitter_p=0.0, gray_p=0.0, blur_p=0.0)  # fmt: skip


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    k1, k2 = jax.random.split(key)
    if config.scan.stage == "scan":
        policy = policy_kwargs(config)
        return one_view(k1, batch["image"], **policy), one_view(k2, batch["neighbor"], **policy)
    weak = one_view(k1, batch["image"], **weak_policy(config))
    return weak, one_view(k2, batch["image"], **policy_kwargs(config))


def init_method_state(params, config: ml_collections.ConfigDict) -> dict:
    if config.scan.stage == "scan":
        return {
            "head_loss": jnp.zeros((config.scan.num_heads,), jnp.float32),
            # Checksum of the mined neighbours the run trains on (set by post_init).
            "neighbors_digest": jnp.zeros((), jnp.int32),
        }
    return {"head_loss": jnp.zeros((1,), jnp.float32)}


def make_loss(model, config: ml_collections.ConfigDict):
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
        method_state = update_head_loss(method_state, total, step, momentum)
        best = jnp.argmin(total)
        metrics = {
            **head_metrics(logits[:, :b], total),
            "consistency": consistency[best],
            "entropy": entropy[best],
            "h_std": losses.embedding_std(aux["features"]),
        }
        # SCAN sums the heads' losses.
        return jnp.sum(total), (batch_stats, method_state, metrics)

    def selflabel_loss_fn(params, batch_stats, views, method_state, step, key):
        weak, strong = views
        b = weak.shape[0]
        x = jnp.concatenate([weak, strong])
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)  # [1, 2B, K]
        loss, confident = losses.selflabel_loss(
            logits[:, :b],
            logits[:, b:],
            threshold=s.selflabel.threshold,
            class_balance=s.selflabel.class_balance,
        )  # [1]
        method_state = update_head_loss(method_state, loss, step, momentum)
        metrics = {
            **head_metrics(logits[:, :b], loss),
            "confident_fraction": confident[0],
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss[0], (batch_stats, method_state, metrics)

    return scan_loss_fn if s.stage == "scan" else selflabel_loss_fn


def batch_extras(exp, indices, step: int) -> dict:
    """One random mined neighbour image per example, drawn from (seed, step)."""
    if exp.config.scan.stage != "scan":
        return {}
    # Draw for the whole global batch, then take this process's slice, so the
    # choice does not depend on the number of processes.
    rng = np.random.default_rng((exp.config.seed, int(step), 0x5CA7))
    choice = rng.integers(0, exp.neighbors.shape[1], size=exp.config.batch_size)
    per = len(indices)
    start = jax.process_index() * per
    picked = exp.neighbors[indices, choice[start : start + per]]
    return {"neighbor": exp.dataset.train.images[picked]}


def host_update(exp, state):
    if exp.config.scan.stage == "scan" and not getattr(exp, "_scan_digest_checked", False):
        saved = int(jax.device_get(state.method_state["neighbors_digest"]))
        if saved != exp.neighbors_digest:
            raise UserError(
                "The mined neighbours differ from those this run was trained with (the pretext "
                f"checkpoint, config.scan.num_neighbors or {NEIGHBORS_FILE} changed). Restore "
                "the pretext run, or start SCAN in a new --workdir."
            )
        exp._scan_digest_checked = True
    return state


def post_init(exp, state):
    if exp.restore_only:  # the saved run's own parameters are restored over this state
        return state
    rep = sharding.replicated(exp.mesh)
    source = "pretext" if exp.config.scan.stage == "scan" else "SCAN-stage"
    params = jax.device_put(_transplant(state.params, exp.scan_init_params, source), rep)
    batch_stats = state.batch_stats
    if exp.scan_init_batch_stats:
        batch_stats = jax.device_put(
            _transplant(batch_stats, exp.scan_init_batch_stats, source), rep
        )
    opt_state = jax.jit(exp.tx.init, out_shardings=rep)(params)
    method_state = dict(state.method_state)
    if exp.config.scan.stage == "scan":
        method_state["neighbors_digest"] = jax.device_put(jnp.int32(exp.neighbors_digest), rep)
    return state.replace(
        params=params, batch_stats=batch_stats, opt_state=opt_state, method_state=method_state
    )


def _prepare_scan(exp) -> None:
    config = exp.config
    pretext_dir = config.pretext_workdir
    workdir = exp.workdir
    if not pretext_dir:
        if not workdir or "pretext" not in config:
            raise UserError(
                "SCAN needs a finished pretext run: pass --config.pretext_workdir=W, e.g. after "
                "python train.py --config=configs/simclr.py:digits --workdir=W."
            )
        pretext_dir = ensure_run(config.pretext, os.path.join(workdir, "pretext"))
    devices = list(exp.mesh.devices.flat)
    pconfig, pexp, pstate = restore_run(pretext_dir, dataset=exp.dataset, devices=devices)
    _check_same_data(pconfig, config, "pretext")
    neighbors = _load_or_mine(exp, pconfig, pexp, pstate, int(jax.device_get(pstate.step)))
    exp.neighbors = neighbors
    exp.neighbors_digest = digest(neighbors)
    exp.neighbor_accuracy = neighbor_accuracy(neighbors, exp.dataset.train.labels)
    logging.warning(
        "SCAN: %d neighbours per image mined from %s; %.1f%% share the image's class.",
        neighbors.shape[1],
        pretext_dir,
        100 * exp.neighbor_accuracy,
    )
    if "backbone" not in pstate.params:
        raise UserError(f"The pretext run in {pretext_dir} has no 'backbone' parameters.")
    exp.scan_init_params = {"backbone": pstate.params["backbone"]}
    stats = pstate.batch_stats.get("backbone") if pstate.batch_stats else None
    exp.scan_init_batch_stats = {"backbone": stats} if stats else {}


def _prepare_selflabel(exp) -> None:
    config = exp.config
    scan_dir = config.scan.scan_workdir
    workdir = exp.workdir
    if not scan_dir:
        if not workdir or "scan_stage" not in config:
            raise UserError(
                "The self-labelling stage needs a finished SCAN-stage run: pass "
                "--config.scan.scan_workdir=W, or use configs/scan.py:PRESET,selflabel, "
                "which runs the SCAN stage in <workdir>/scan first."
            )
        stage = ml_collections.ConfigDict(config.scan_stage.to_dict())
        if config.pretext_workdir and not stage.pretext_workdir:
            stage.pretext_workdir = config.pretext_workdir
        scan_dir = ensure_run(stage, os.path.join(workdir, "scan"))
    devices = list(exp.mesh.devices.flat)
    sconfig, _, sstate = restore_run(scan_dir, dataset=exp.dataset, devices=devices)
    if sconfig.method != "scan" or sconfig.scan.stage != "scan":
        raise UserError(f"{scan_dir} is not a SCAN-stage run (method scan, scan.stage 'scan').")
    _check_same_data(sconfig, config, "SCAN-stage")
    if sconfig.scan.num_clusters != config.scan.num_clusters:
        raise UserError(
            f"The SCAN-stage run has {sconfig.scan.num_clusters} clusters; set "
            f"--config.scan.num_clusters={sconfig.scan.num_clusters}."
        )
    best = int(np.argmin(jax.device_get(sstate.method_state["head_loss"])))
    head = sstate.params["head"]
    exp.scan_init_params = {
        "backbone": sstate.params["backbone"],
        "head": {"kernel": head["kernel"][best : best + 1], "bias": head["bias"][best : best + 1]},
    }
    stats = sstate.batch_stats.get("backbone") if sstate.batch_stats else None
    exp.scan_init_batch_stats = {"backbone": stats} if stats else {}
    exp.scan_source_head = best
    logging.warning("Self-labelling from head %d of the SCAN-stage run %s", best, scan_dir)


def prepare(exp) -> None:
    if exp.restore_only:  # only this run's parameters are wanted
        return
    if exp.config.scan.stage == "scan":
        _prepare_scan(exp)
    else:
        _prepare_selflabel(exp)


def extra_eval(exp, state) -> dict:
    heads = exp.config.scan.num_heads if exp.config.scan.stage == "scan" else 1
    best = int(np.argmin(jax.device_get(state.method_state["head_loss"])))
    results = evaluate_heads(
        exp, state, num_heads=heads, best_head=best, max_share=exp.config.scan.max_cluster_share
    )
    if exp.config.scan.stage == "scan":
        results["neighbor_acc"] = exp.neighbor_accuracy
    return results


SCAN = Method(
    name="scan",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    prepare=prepare,
    post_init=post_init,
    batch_extras=batch_extras,
    host_update=host_update,
    collapse_warnings=make_collapse_warnings("scan"),
    extra_eval=extra_eval,
)
