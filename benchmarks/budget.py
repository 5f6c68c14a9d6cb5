"""Accuracy under a wall-clock budget on the CIFAR-10 JPEG copy, in jssl or a PyTorch reference.

    python benchmarks/budget.py --method simclr --minutes 20
    python benchmarks/budget.py --framework torch --minutes 20   # needs torch + torchvision

Trains for about ``--minutes`` of wall clock (the number of steps is set from
the throughput measured in a short warm-up, so the learning-rate warm-up +
cosine schedule ends with the budget; the clock stops the run in any case),
then reports kNN top-1 (k=20, T=0.07), linear-probe top-1 and k-means
clustering ACC/NMI/ARI on the test split, beside the raw-pixel kNN floor
computed in the same run (45.8% on this copy).

``--framework torch`` trains the plain PyTorch SimCLR of
benchmarks/torch_reference.py (the network of benchmarks/compare_pytorch.py,
torchvision transforms in a ``DataLoader`` with workers, NT-Xent) with the jssl
run's batch, optimiser (LARS as optax.lars, or SGD) and learning-rate schedule
(jssl's own schedule function, sized the same way), then scores the frozen
backbone's features with jssl's evaluators (those the trainer runs, through
jssl's ``Predictor`` interface), so both frameworks are measured by the same code.

Both record a curve of kNN top-1 against wall-clock training minutes: the
state is kept at every ``--curve_points``-th of the planned steps (jssl: the
trainer's checkpoints; PyTorch: copies of the state dict) and at the end, and
each kept state is scored after training (so scoring never runs on the
training clock) by the same cheap kNN on a fixed subset (``--curve_train``
train and ``--curve_test`` test images drawn by ``jssl.data.take_subset`` from
seed 0, the same subset for both frameworks).
The final full evaluation is unchanged. jssl's times come from the trainer's
metrics log (the seconds of each logged interval of 10 steps).

Writes one JSON per run under benchmarks/results/ (command, framework,
machine, load average before and after, CPU time other processes took during
training, date, versions, curve, final figures); benchmarks/render_results.py
turns them into the table and plot of docs/results.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime
import json
import math
import os
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import torch_reference as ref  # noqa: E402
from benchmarks.common import (  # noqa: E402
    DEFAULT_ARCHIVE,
    CpuSampler,
    all_images,
    image_folder,
    loadavg,
    machine,
    versions,
)
from benchmarks.throughput import load_config, write_result  # noqa: E402
from jssl import data, evaluation, methods, optim, trainer  # noqa: E402
from jssl.checkpoint import Checkpointer  # noqa: E402
from jssl.models import count_params  # noqa: E402

WARMUP_STEPS = 5  # timed steps of the throughput warm-up (after one untimed step)
CURVE_SEED = 0  # the curve's fixed kNN subsets (recorded in the JSON)


def budget_config(method: str, data_path: str, batch_size: int) -> ml_collections.ConfigDict:
    """The method's CPU-sized CIFAR-10 config (``cifar10_folder,cpu``: configs/common.py
    ``apply_cpu``) on the image folder, its length set later from the time budget."""
    config = load_config(f"configs/{method}.py:cifar10_folder,cpu")
    config.data.path = data_path
    config.batch_size = batch_size
    config.eval.untrained = False
    return config


def apply_overrides(config: ml_collections.ConfigDict, items: list[str]) -> None:
    """``KEY=VALUE`` overrides (dotted keys; values as Python literals, else strings)."""
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            sys.exit(f"error: --set {item!r}: expected KEY=VALUE, e.g. --set optim.momentum=0.8")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node, path = config, key.split(".")
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]]  # noqa: B018 (an unknown key is an error, not a new field)
        except (KeyError, AttributeError, TypeError):
            sys.exit(f"error: --set {key}: no such config field")
        node[path[-1]] = value


def pixels(source) -> np.ndarray:
    """float32 [N, H*W*C] in [0, 1]: the raw pixels of every image of an ImageSource."""
    x = all_images(source)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def raw_pixel_knn(dataset) -> float:
    train, test = pixels(dataset.train), pixels(dataset.test)
    mean = train.mean(0)
    return evaluation.knn_accuracy(
        train - mean,
        dataset.train.labels,
        test - mean,
        dataset.test.labels,
        num_classes=dataset.num_classes,
    )


def raw_pixel_kmeans(dataset, seed: int = 0) -> dict[str, float]:
    """The clustering floor: k-means (sklearn, k-means++, 3 inits) on the test split's raw pixels.

    Scored like every clustering figure here (Hungarian-matched ACC, NMI, ARI on
    the test split) with K = the number of classes.
    """
    import sklearn.cluster

    test = dataset.test
    k = dataset.num_classes
    pred = sklearn.cluster.KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(
        pixels(test)
    )
    y = np.asarray(test.labels)
    return {
        "acc": float(evaluation.cluster_accuracy(y, pred, num_classes=k)),
        "nmi": float(evaluation.nmi(y, pred, num_classes=k)),
        "ari": float(evaluation.ari(y, pred, num_classes=k)),
    }


# ----------------------------------------------------------------------------
# Shared by both frameworks


def curve_interval(planned_steps: int, points: int, log_every: int) -> int:
    """Steps between kept states: about planned/points, a multiple of the log interval."""
    return max(log_every, int(round(planned_steps / max(points, 1) / log_every)) * log_every)


def curve_subsets(dataset, n_train: int, n_test: int, seed: int = CURVE_SEED):
    """The fixed (train, test) subsets of the curve's kNN: the same for both frameworks."""
    return (
        data.take_subset(dataset.train, n_train, seed=seed),
        data.take_subset(dataset.test, n_test, seed=seed),
    )


def eval_train_split(dataset, config):
    """The train split of the final evaluation, capped as ``Experiment.evaluate`` caps it."""
    return data.take_subset(dataset.train, config.eval.max_train_examples, seed=config.seed)


def scores(predict, state, train, test, config, dataset, evaluators) -> dict[str, float]:
    """{metric: value} of jssl's ``evaluators`` on (train, test), as the trainer computes them.

    ``predict(variables, source, select)`` runs the network (jssl's ``Predictor``
    or ``TorchPredictor``); ``state`` holds its weights (``params``, ``batch_stats``).
    """
    ctx = evaluation.EvalContext(
        config=config,
        predict=predict,
        state=state,
        train=train,
        test=test,
        num_classes=dataset.num_classes,
        class_names=dataset.class_names,
    )
    found = {k: m.value for k, m in evaluation.run_evaluators(evaluators, ctx).items()}
    return {**found, "eval_train_examples": len(train)}  # as Experiment.evaluate reports


def subset_knn(predict, state, subsets, config, dataset) -> float:
    """kNN top-1 (the final evaluation's k and temperature) on the curve's subsets."""
    train, test = subsets
    return scores(predict, state, train, test, config, dataset, ("knn",))["knn_top1"]


# ----------------------------------------------------------------------------
# jssl


def logged_times(workdir: str, batch_size: int) -> dict[int, tuple[float, float]]:
    """{logged step: (seconds of training up to it, mean loss of its interval)}.

    The trainer logs every ``log_every`` steps the images/s of the interval since
    the previous log (its clock starts before the first step, compilation
    included), so the seconds add up to the training loop's wall clock. The
    trainer checks its deadline when it dispatches a step, and dispatch runs up
    to ``log_every`` steps ahead of the computation, so a run stopped by the clock
    can train up to one log interval past ``--minutes``: these times are the
    real ones, not the budget.
    """
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row.get("kind") == "train" and "images_per_sec" in row:
                rows.append(row)
    out, prev, total = {}, 0, 0.0
    for row in sorted(rows, key=lambda r: r["step"]):
        total += (row["step"] - prev) * batch_size / row["images_per_sec"]
        out[row["step"]], prev = (total, float(row.get("loss", float("nan")))), row["step"]
    return out


def run_jssl(args, config, sampler: CpuSampler) -> dict:
    exp = trainer.Experiment(config)
    state = exp.init_state()
    param_count = count_params(state.params)
    state, m = exp.train_step(state, exp.global_batch(0))  # compile
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for step in range(1, WARMUP_STEPS + 1):
        state, m = exp.train_step(state, exp.global_batch(step))
    jax.block_until_ready(m)
    steps_per_sec = WARMUP_STEPS / (time.perf_counter() - t0)
    state = m = None
    budget_s = args.minutes * 60
    config.num_steps = max(10, int(budget_s * steps_per_sec))
    config.max_train_seconds = budget_s
    interval = curve_interval(config.num_steps, args.curve_points, config.log_every)
    config.checkpoint_every = interval  # the kept states of the curve
    config.keep_checkpoints = config.num_steps // interval + 3
    print(
        f"{steps_per_sec * config.batch_size:.0f} img/s in warm-up -> {config.num_steps} steps",
        flush=True,
    )

    workdir = args.workdir or tempfile.mkdtemp(prefix=f"jssl-budget-{args.method}-")
    load_before = loadavg()
    t0 = time.perf_counter()
    out = trainer.train_and_evaluate(config, workdir, stop_at_step=None)
    t_done = time.perf_counter()
    eval_s = out["eval"]["eval_seconds"] if out["eval"] is not None else 0.0
    if out["eval"] is None:  # stopped by the clock before num_steps: evaluate what we have
        metrics = exp.evaluate(out["state"])  # the trainer's evaluators, {name: Metric}
        out["eval"] = {k: m.value for k, m in metrics.items()}
        out["eval"]["eval_seconds"] = time.perf_counter() - t_done
    train_eval_s = time.perf_counter() - t0
    steps = int(out["state"].step)
    times = logged_times(workdir, config.batch_size)
    # The training loop ran just before the trainer's own final evaluation (if any).
    t_train_end = t_done - eval_s
    if steps in times:
        train_s = times[steps][0]
    elif times:  # a run the clock stopped ends after its last log: the steps since at its pace
        last = max(times)
        before = max([s for s in times if s < last], default=0)
        pace = (times[last][0] - (times[before][0] if before else 0.0)) / (last - before)
        train_s = times[last][0] + (steps - last) * pace
    else:  # nothing logged: the whole call but its evaluation (setup included)
        train_s = t_train_end - t0
    cpu = sampler.share(t_train_end - train_s, t_train_end)
    load_after = sampler.loadavg_at(t_train_end)

    # The curve: the initial state (a function of the seed) and every checkpoint.
    t_curve = time.perf_counter()
    subsets = curve_subsets(exp.dataset, args.curve_train, args.curve_test)
    init = exp.init_state()

    def knn_of(state):  # the Experiment's Predictor: one compiled forward pass for all states
        return subset_knn(exp.predict, state, subsets, config, exp.dataset)

    curve = [{"step": 0, "minutes": 0.0, "knn_top1": knn_of(init)}]
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints + 10)
    try:
        for s in sorted(ckpt.manager.all_steps()):
            if s == 0:
                continue
            seconds, loss = times.get(s, (train_s, float("nan")))
            kept = ckpt.restore(init, step=s)
            knn = knn_of(kept)
            curve.append({"step": s, "minutes": seconds / 60, "knn_top1": knn, "loss": loss})
            print(f"curve: step {s:5d}  {seconds / 60:6.2f} min  kNN {knn:.4f}", flush=True)
    finally:
        ckpt.close()
    curve_s = time.perf_counter() - t_curve

    return {
        "framework": "jssl",
        "param_count": param_count,
        "warmup_images_per_sec": steps_per_sec * config.batch_size,
        "planned_steps": config.num_steps,
        "steps": steps,
        "epochs": steps / exp.steps_per_epoch,
        "train_seconds": train_s,
        "train_and_eval_seconds": train_eval_s,
        "curve_seconds": curve_s,
        "cpu_during_train": cpu,
        "loadavg_1_5_15_before": load_before,
        "loadavg_1_5_15_after": load_after,
        "eval": out["eval"],
        "curve": curve,
        "dataset": exp.dataset,
        "devices": [str(d) for d in jax.devices()],
        "optimizer": (
            f"{config.optim.name} lr {config.optim.learning_rate} x batch/256, "
            f"wd {config.optim.weight_decay}, momentum {config.optim.momentum} (optax)"
        ),
        "workdir": workdir,
    }


# ----------------------------------------------------------------------------
# PyTorch reference (benchmarks/torch_reference.py; PyTorch is imported only here)


class TorchPredictor:
    """jssl's ``Predictor`` interface over the PyTorch network, for jssl's evaluators.

    ``predictor(variables, source, "features")``: the backbone's pooled features
    (eval mode) of every image of ``source``, where ``variables["params"]`` is
    the network's state dict (``torch_state``).
    """

    def __init__(self, torch, model, batch_size: int):
        self.torch, self.model, self.batch_size = torch, model, batch_size

    def __call__(self, variables, source, select="features", *, progress=None):
        """(``progress``, the Predictor's per-batch report, is not given here.)"""
        if select != "features":
            sys.exit(
                "error: the PyTorch reference is scored on its backbone's features only "
                f"(config.eval.representation='features', not {select!r})"
            )
        self.model.load_state_dict(variables["params"])
        self.model.eval()
        return ref.torch_features(self.torch, self.model.backbone, source, self.batch_size)


def torch_state(state_dict):
    """What jssl's EvalContext reads of a trained state, holding a PyTorch state dict."""
    return types.SimpleNamespace(params=state_dict, batch_stats=None)


def run_torch(args, config, sampler: CpuSampler) -> dict:
    torch, torchvision = ref.import_torch("--framework torch needs PyTorch")
    if args.method != "simclr":
        sys.exit("error: the PyTorch reference is SimCLR only (--method simclr)")
    a = config.augment
    policy = (a.crop_size, a.strength, a.jitter_p, a.gray_p, a.blur_p, a.flip)
    if policy != (32, 0.5, 0.8, 0.2, 0.0, True) or config.simclr.proj_dim != 128:
        sys.exit("error: the PyTorch reference implements configs/simclr.py:cifar10_folder only")
    torch.set_num_threads(args.threads)

    # The jssl Experiment gives the same data (decoded once into jssl's cache), the
    # parameter count to match and the steps per epoch; it never trains.
    exp = trainer.Experiment(config)
    size = config.augment.crop_size
    shapes = jax.eval_shape(  # the jssl model's parameters, without compiling its init
        lambda: exp.model.init(jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)), train=False)
    )
    jssl_params = count_params(shapes["params"])
    dataset, bs = exp.dataset, config.batch_size
    spec = {
        "width": config.model.kwargs.width,
        "stage_sizes": tuple(config.model.kwargs.stage_sizes),
        "proj_hidden": config.simclr.proj_hidden_dims[0],
    }
    temperature = config.simclr.temperature

    def new_model():
        torch.manual_seed(config.seed)
        model = ref.build_torch_model(torch, spec)
        model.train()
        return model, ref.torch_optimizer(torch, model, config)

    # The usual recipe: a Dataset over the uint8 training array (read once from the source).
    two_views = ref.torch_two_views_dataset(
        torch, all_images(dataset.train), ref.torch_view_transform(scale=tuple(a.scale))
    )

    def batches(persistent: bool):
        loader = ref.torch_loader(torch, two_views, bs, args.workers, persistent)
        while True:
            for v1, v2 in loader:
                yield torch.cat([v1, v2])

    def train_step(model, opt, x, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        return ref.torch_simclr_step(torch, model, opt, x, temperature)

    # Warm-up throughput, end to end (DataLoader included), on a model thrown away after.
    model, opt = new_model()
    param_count = sum(p.numel() for p in model.parameters())
    if param_count != jssl_params:
        sys.exit(f"error: PyTorch model has {param_count:,} parameters, jssl's {jssl_params:,}")
    it = batches(persistent=False)
    train_step(model, opt, next(it), 0.0)  # starts the workers
    t0 = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        train_step(model, opt, next(it), 0.0)
    steps_per_sec = WARMUP_STEPS / (time.perf_counter() - t0)
    it.close()
    it = None
    budget_s = args.minutes * 60
    planned = max(10, int(budget_s * steps_per_sec))
    config.num_steps = planned
    steps_per_epoch = exp.steps_per_epoch
    schedule = optim.learning_rate_schedule(config, planned, steps_per_epoch)
    lrs = np.asarray(jax.vmap(schedule)(jnp.arange(planned)), np.float64)
    interval = curve_interval(planned, args.curve_points, config.log_every)
    print(f"{steps_per_sec * bs:.0f} img/s in warm-up -> {planned} steps", flush=True)

    # Training: a fresh model, a fresh DataLoader (its start is on the clock, as jssl's
    # compilation is), the state dict kept every `interval` steps and at the end.
    model, opt = new_model()
    kept = [(0, 0.0, float("nan"), copy.deepcopy(model.state_dict()))]
    losses = []
    load_before = loadavg()
    t0 = time.perf_counter()
    it = batches(persistent=True)
    steps = 0
    for step in range(planned):
        losses.append(train_step(model, opt, next(it), float(lrs[step])))
        steps = step + 1
        elapsed = time.perf_counter() - t0
        stop = elapsed > budget_s
        if not math.isfinite(losses[-1]):
            sys.exit(f"error: non-finite loss at step {steps}")
        if steps % interval == 0 or steps == planned or stop:
            loss = float(np.mean(losses[-config.log_every :]))
            kept.append((steps, elapsed, loss, copy.deepcopy(model.state_dict())))
        if stop:
            break
    train_s = time.perf_counter() - t0
    it.close()
    it = None
    load_after = loadavg()
    cpu = sampler.share(t0, t0 + train_s)

    # The final evaluation: the evaluators jssl's trainer runs for this method, on the
    # frozen backbone's features of the same train subset and test split.
    t_eval = time.perf_counter()
    predict = TorchPredictor(torch, model, config.eval.batch_size)
    evaluators = methods.get_method(config.method).evaluators
    train = eval_train_split(dataset, config)
    results = scores(
        predict, torch_state(kept[-1][3]), train, dataset.test, config, dataset, evaluators
    )
    eval_s = time.perf_counter() - t_eval
    results["eval_seconds"] = eval_s

    t_curve = time.perf_counter()
    subsets = curve_subsets(dataset, args.curve_train, args.curve_test)
    curve = []
    for s, seconds, loss, state_dict in kept:
        knn = subset_knn(predict, torch_state(state_dict), subsets, config, dataset)
        point = {"step": s, "minutes": seconds / 60, "knn_top1": knn}
        curve.append(point if s == 0 else {**point, "loss": loss})
        print(f"curve: step {s:5d}  {seconds / 60:6.2f} min  kNN {knn:.4f}", flush=True)
    curve_s = time.perf_counter() - t_curve

    return {
        "framework": "torch",
        "param_count": param_count,
        "warmup_images_per_sec": steps_per_sec * bs,
        "planned_steps": planned,
        "steps": steps,
        "epochs": steps / steps_per_epoch,
        "train_seconds": train_s,
        "train_and_eval_seconds": train_s + eval_s,
        "curve_seconds": curve_s,
        "cpu_during_train": cpu,
        "loadavg_1_5_15_before": load_before,
        "loadavg_1_5_15_after": load_after,
        "eval": results,
        "curve": curve,
        "dataset": dataset,
        "torch_threads": torch.get_num_threads(),
        "dataloader_workers": args.workers,
        "optimizer": (
            f"{config.optim.name} lr {config.optim.learning_rate} x batch/256, "
            f"wd {config.optim.weight_decay}, momentum {config.optim.momentum} (PyTorch)"
        ),
        "torch_versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }


# ----------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="simclr")
    p.add_argument("--framework", default="jssl", choices=("jssl", "torch"))
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--data", default=DEFAULT_ARCHIVE, help="image folder or .tar.gz of one")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--workdir", default="", help="jssl: the run folder (default: a temp folder)")
    p.add_argument("--max_eval_train", type=int, default=0, help="cap train features for eval")
    p.add_argument("--curve_points", type=int, default=5, help="kept states besides start, end")
    p.add_argument("--curve_train", type=int, default=10_000, help="train images of curve kNN")
    p.add_argument("--curve_test", type=int, default=2_000, help="test images of curve kNN")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="torch DataLoader workers")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override after the budget defaults, e.g. --set sela.num_label_updates=4",
    )
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = loadavg()
    config = budget_config(args.method, image_folder(args.data), args.batch_size)
    apply_overrides(config, args.set)
    config.eval.max_train_examples = args.max_eval_train
    config.eval.cpu_max_train_examples = 0  # 0 above: every training image, on the CPU too
    run = run_torch if args.framework == "torch" else run_jssl
    with CpuSampler() as sampler:
        r = run(args, config, sampler)
    dataset = r.pop("dataset")
    final = r.pop("eval")
    all_versions = versions()
    all_versions.update(r.pop("torch_versions", {}))
    result = {
        "method": args.method,
        "framework": r.pop("framework"),
        "minutes_budget": args.minutes,
        "steps": r.pop("steps"),
        "planned_steps": r.pop("planned_steps"),
        "epochs": r.pop("epochs"),
        "batch_size": config.batch_size,
        "model": f"{config.model.name} {dict(config.model.kwargs)}",
        "train_seconds": r.pop("train_seconds"),
        "train_and_eval_seconds": r.pop("train_and_eval_seconds"),
        **final,
        "raw_pixel_knn_top1": raw_pixel_knn(dataset),
        "raw_pixel_kmeans_test": raw_pixel_kmeans(dataset),
        "curve": r.pop("curve"),
        "curve_subset": {
            "train": min(args.curve_train or 10**9, len(dataset.train)),
            "test": min(args.curve_test or 10**9, len(dataset.test)),
            "seed": CURVE_SEED,
        },
        "machine": {**machine(), "loadavg_1_5_15_at_start": load_start},
        "loadavg_1_5_15_before": r.pop("loadavg_1_5_15_before"),
        "loadavg_1_5_15_after": r.pop("loadavg_1_5_15_after"),
        "cpu_during_train": r.pop("cpu_during_train"),
        **r,
        "versions": all_versions,
        "jax": jax.__version__,
        "data": f"{args.data} ({len(dataset.train)} train, {len(dataset.test)} test)",
        "date": date,
        "command": "python benchmarks/budget.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    result["total_seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2, default=str))
    name = f"budget_{result['framework']}_{args.method}_{args.minutes:g}min_{date[:10]}.json"
    write_result(result, name, args.out)
    return result


if __name__ == "__main__":
    main()
