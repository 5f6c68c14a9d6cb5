"""``python -m jssl.features``: the frozen representation of a network, computed once, to a file.

    python -m jssl.features --workdir=W --split=train --out=train.npz
    python -m jssl.features --workdir=W --split=val --out=val.npz      # data.val_fraction's part
    python -m jssl.features --config=configs/dino.py:imagenet \\
        --config.init_from.weights=dinov2_vits14.safetensors --split=train --out=train.npz

With ``--workdir`` the network is the run's latest checkpoint (``--network``: the teacher
when the method evaluates one, as ``jssl.export``); with ``--config`` alone it is the
config's model at its initialisation, or the backbone file ``config.init_from.weights``
(converted PyTorch weights). The splits:

- train: the training split, less the validation part when ``data.val_fraction`` > 0;
- val: that validation part (``--val_fraction`` carves one when the run has none: its
  images were seen, without labels, by the self-supervised run);
- test: the test split.

The file (``jssl.features.load``) holds ``features`` float32 [N, D], ``labels`` int32 [N],
``indices`` [N] (each row's position in its split, to find its image again) and ``meta``
(the config, split, network, step, class names), which ``python -m jssl.cluster`` reads.
The forward pass runs on every local device, and on every process with
``--coordinator_address --num_processes --process_id`` as train.py (``Predictor``); chunks of
``--chunk`` rows are kept in ``OUT.partial/`` as they finish, so a killed command resumes
where it stopped, and the file appears only once complete (written to a temporary name,
then renamed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np

SPLITS = ("train", "val", "test")
REPRESENTATIONS = ("features", "output")


@dataclasses.dataclass(frozen=True)
class FeatureFile:
    """A feature cache: rows of one split, their labels and where they came from."""

    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int32 [N]
    indices: np.ndarray  # int64 [N], rows of the split
    meta: dict

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])


def load(path: str) -> FeatureFile:
    """Reads a file ``python -m jssl.features`` wrote (UserError naming the problem)."""
    from jssl.errors import UserError

    if not os.path.isfile(path):
        raise UserError(
            f"{path}: no such feature file; write one with python -m jssl.features "
            "--workdir=W --split=train --out=F"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            out = FeatureFile(
                features=np.asarray(f["features"], np.float32),
                labels=np.asarray(f["labels"], np.int32),
                indices=np.asarray(f["indices"], np.int64),
                meta=json.loads(str(f["meta"])),
            )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"{path} is not a jssl feature file ({type(e).__name__}: {e}); write it again "
            "with python -m jssl.features"
        ) from e
    if out.features.ndim != 2 or len(out.features) != len(out.labels):
        raise UserError(
            f"{path}: features {out.features.shape} and labels {out.labels.shape} do not "
            "match; write it again with python -m jssl.features"
        )
    return out


def images(ff: FeatureFile):
    """The ImageSource whose rows ``ff.indices`` are the images of ``ff`` (its run's data,
    carved as when the file was written)."""
    from jssl.experiment import config_from_json, load_data

    config = config_from_json(ff.meta["config"])
    dataset = load_data(config)
    return dataset.train if ff.meta["split"] == "train" else dataset.test


def _data_config(config, split: str, val_fraction: float | None):
    """The config whose ``load_data`` gives ``split`` as its train (train) or test (val, test)."""
    from jssl.errors import UserError

    config = config.copy_and_resolve_references()
    with config.unlocked():
        if val_fraction is not None:
            config.data.val_fraction = float(val_fraction)
        fraction = config.data.get("val_fraction", 0.0)
        if split == "val" and not fraction:
            raise UserError(
                "--split=val: this run has no validation split (data.val_fraction is 0); give "
                "--val_fraction=0.1 to carve one from the training split"
            )
        config.eval.split = "val" if split == "val" else "test"
    return config


def _network(config, workdir: str | None, network: str | None, devices=None):
    """(Experiment, flax variables, network name, step) of a restored run or of the config."""
    import jax

    from jssl.evaluation import network_variables
    from jssl.experiment import Experiment, restore_run

    if workdir is not None:
        run = restore_run(workdir, config=config, devices=devices)
        exp, state = run.experiment, run.state
        network = network or exp.method.default_network
    else:
        exp = Experiment(config, devices)
        state = exp.init_state()
        network = network or "student"
    variables = network_variables(state, network, teacher=exp.method.teacher)
    return exp, variables, network, int(jax.device_get(state.step))


def _save_npy(path: str, array: np.ndarray) -> None:
    """``array`` to ``path`` through a temporary name, so a kill leaves no half file."""
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _chunk_path(partial: str, i: int) -> str:
    return os.path.join(partial, f"chunk_{i:06d}.npy")


def _open_partial(partial: str, key: dict) -> None:
    """Creates the chunk folder of ``key``, or checks that an existing one is ``key``'s."""
    from jssl.errors import UserError

    key_path = os.path.join(partial, "key.json")
    if os.path.isdir(partial):
        saved = None
        if os.path.exists(key_path):
            with open(key_path) as f:
                saved = json.load(f)
        if saved != key:
            raise UserError(
                f"{partial} holds the chunks of another feature file (another run, split, "
                "network or chunk size); remove it, or give another --out"
            )
        return
    os.makedirs(partial)
    with open(key_path + ".tmp", "w") as f:
        json.dump(key, f)
    os.replace(key_path + ".tmp", key_path)


def write(
    out: str,
    *,
    split: str,
    workdir: str | None = None,
    config=None,
    network: str | None = None,
    representation: str = "features",
    val_fraction: float | None = None,
    chunk: int = 8192,
    devices=None,
    log=print,
) -> FeatureFile | None:
    """Computes and writes the feature file ``out`` (.npz); returns it on process 0 (the one
    that writes), None on the others. See the module doc."""
    import jax

    from jssl.errors import UserError
    from jssl.experiment import saved_config

    if split not in SPLITS:
        raise UserError(f"--split={split}: use one of {', '.join(SPLITS)}")
    if representation not in REPRESENTATIONS:
        raise UserError(
            f"--representation={representation}: use 'features' (the backbone's pooled "
            "output) or 'output' (the model's output, e.g. a projection)"
        )
    if not out.endswith(".npz"):
        raise UserError(f"--out={out}: give a .npz path")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UserError(f"--out={out}: the folder {folder} does not exist; create it first")
    if chunk < 1:
        raise UserError(f"--chunk={chunk}: give a number of rows >= 1")
    if workdir is None and config is None:
        raise UserError("give --workdir=W (a run) or --config=FILE:PRESET (a network)")
    base = config if config is not None else saved_config(workdir)
    config = _data_config(base, split, val_fraction)
    exp, variables, network, step = _network(config, workdir, network, devices)
    # _data_config made the val and test splits the dataset's test part
    source = exp.dataset.train if split == "train" else exp.dataset.test
    n = len(source)
    meta = {
        "workdir": os.path.abspath(workdir) if workdir else None,
        "split": split,
        "network": network,
        "representation": representation,
        "step": step,
        "num_examples": n,
        "class_names": [str(c) for c in exp.dataset.class_names],
        "dataset": exp.dataset.name,
        "config": json.loads(config.to_json_best_effort()),
    }
    partial = out + ".partial"
    key = {k: meta[k] for k in ("workdir", "split", "network", "representation", "step")}
    key.update(config=meta["config"], chunk=chunk)
    leader = jax.process_index() == 0
    starts = range(0, n, chunk)
    done = np.zeros(len(starts), bool)
    if leader:
        _open_partial(partial, key)
        done = np.asarray([os.path.exists(_chunk_path(partial, i)) for i in range(len(starts))])
    if jax.process_count() > 1:  # process 0's list: the others may not share its disk
        from jax.experimental import multihost_utils

        done = np.asarray(multihost_utils.broadcast_one_to_all(done))
    parts = []
    for i, start in enumerate(starts):
        if done[i]:  # only process 0 keeps the file's rows; the others skip them too
            parts.append(np.load(_chunk_path(partial, i)) if leader else None)
            continue
        rows = np.arange(start, min(start + chunk, n))
        part = exp.predict(variables, source, representation, indices=rows)
        part = part.reshape(len(rows), -1)
        if leader:
            _save_npy(_chunk_path(partial, i), part)
        parts.append(part)
        if leader:
            log(f"features: {rows[-1] + 1} of {n} {split} images")
    if not leader:
        return None
    result = FeatureFile(
        features=np.concatenate(parts).astype(np.float32),
        labels=np.asarray(source.labels, np.int32),
        indices=np.arange(n, dtype=np.int64),
        meta=meta,
    )
    tmp = out[: -len(".npz")] + ".tmp.npz"
    np.savez(
        tmp,
        features=result.features,
        labels=result.labels,
        indices=result.indices,
        meta=np.asarray(json.dumps(meta)),
    )
    os.replace(tmp, out)
    shutil.rmtree(partial, ignore_errors=True)
    return result


def main(argv=None) -> int:
    """Exit status 0, or 1 after one ``error:`` line for a user error."""
    from jssl import cli

    usage = (
        "python -m jssl.features (--workdir=W | --config=FILE:PRESET) "
        "--split=train|val|test --out=F.npz"
    )

    def define(fv):
        from absl import flags

        flags.DEFINE_string("workdir", None, "The run whose network to use.", flag_values=fv)
        flags.DEFINE_enum("split", None, SPLITS, "The split to compute.", flag_values=fv)
        flags.DEFINE_string("out", None, "The .npz file to write.", flag_values=fv)
        flags.DEFINE_enum(
            "network", None, ("student", "teacher"), "Default: as jssl.export.", flag_values=fv
        )
        flags.DEFINE_enum(
            "representation", "features", REPRESENTATIONS, "features: the backbone's "
            "pooled output; output: the model's output.", flag_values=fv,
        )  # fmt: skip
        flags.DEFINE_float(
            "val_fraction", None, "Carve this validation share (default: the run's).",
            flag_values=fv,
        )  # fmt: skip
        flags.DEFINE_integer("chunk", 8192, "Rows per resumable chunk.", flag_values=fv)
        flags.DEFINE_string(
            "coordinator_address", None, "Several processes: host:port of process 0.",
            flag_values=fv,
        )  # fmt: skip
        flags.DEFINE_integer("num_processes", None, "Several processes: how many.", flag_values=fv)
        flags.DEFINE_integer("process_id", None, "Several processes: this one's.", flag_values=fv)

    argv = list(sys.argv if argv is None else argv)
    parsed = cli.parse_config_flags(argv, usage=usage, define=define, config_required=False)
    if parsed is None:
        return 1
    config, fv = parsed
    if fv.split is None or fv.out is None or (fv.workdir is None) == (config is None):
        cli.print_error(f"give --split, --out and one of --workdir or --config; usage: {usage}")
        return 1
    try:
        from jssl import distributed

        joins = (fv.coordinator_address, fv.num_processes, fv.process_id)
        if any(v is not None for v in joins) or not distributed.started():
            distributed.initialize(*joins)
        if fv.workdir is not None:
            from jssl import validation

            validation.validate_saved_run(fv.workdir)
        result = write(
            fv.out,
            split=fv.split,
            workdir=fv.workdir,
            config=config,
            network=fv.network,
            representation=fv.representation,
            val_fraction=fv.val_fraction,
            chunk=fv.chunk,
        )
    except cli.user_error_types() as e:
        cli.print_error(e)
        return 1
    if result is None:  # not process 0
        return 0
    n, d = result.features.shape
    print(f"{fv.out}: {n} {fv.split} images x {d} ({result.meta['network']}'s {fv.representation})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
