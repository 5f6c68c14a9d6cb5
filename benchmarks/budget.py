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
benchmarks/compare_pytorch.py (same ResNet, torchvision transforms in a
``DataLoader`` with workers, NT-Xent) with the jssl run's batch, optimiser
(LARS as optax.lars, or SGD) and learning-rate schedule (jssl's own schedule
function, sized the same way), then scores the frozen backbone's features with
jssl's evaluation code, so both frameworks are measured by the same code.

Both record a curve of kNN top-1 against wall-clock training minutes: the
state is kept at every ``--curve_points``-th of the planned steps (jssl: the
trainer's checkpoints; PyTorch: copies of the state dict) and at the end, and
each kept state is scored after training (so scoring never runs on the
training clock) by the same cheap kNN on a fixed subset (``--curve_train``
train and ``--curve_test`` test images, the same subset for both frameworks).
The final full evaluation is unchanged. jssl's times come from the trainer's
metrics log (the seconds of each logged interval of 10 steps).

Writes one JSON per run under benchmarks/results/ (command, framework,
machine, load average before and after, CPU time other processes took during
training, date, versions, curve, final figures); benchmarks/render_results.py
turns them into the README table and plot.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime
import json
import math
import os
import platform
import sys
import tarfile
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import compare_pytorch  # noqa: E402
from benchmarks.throughput import load_config, write_result  # noqa: E402
from jssl import augment, data, evaluation, optim, trainer  # noqa: E402
from jssl.checkpoint import Checkpointer  # noqa: E402
from jssl.models import count_params  # noqa: E402

DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")
WARMUP_STEPS = 5  # timed steps of the throughput warm-up (after one untimed step)


def image_folder(path: str) -> str:
    """An image-folder root: ``path`` itself, or a .tar.gz unpacked once under the temp folder."""
    if os.path.isdir(path):
        return path
    if not os.path.exists(path):
        sys.exit(
            f"error: {path} not found; pass --data DIR (train/<class>/*.jpg, test/<class>/*.jpg)."
        )
    target = os.path.join(tempfile.gettempdir(), "jssl-" + os.path.basename(path).split(".")[0])
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        print(f"unpacking {path} -> {target}", flush=True)
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        open(marker, "w").close()
    roots = [d for d in os.listdir(target) if os.path.isdir(os.path.join(target, d, "train"))]
    return os.path.join(target, roots[0]) if roots else target


def budget_config(method: str, data_path: str, batch_size: int) -> ml_collections.ConfigDict:
    config = load_config(f"configs/{method}.py:cifar10_folder")
    config.data.path = data_path
    config.batch_size = batch_size
    # A CPU-sized ResNet (one basic block per stage, width 16), as in PERF-NOTES.md, with
    # strided convolutions as patches + matmul (faster on XLA's CPU backend; jssl.models.conv).
    config.model.kwargs.update(width=16, stage_sizes=(1, 1, 1, 1), conv_impl="im2col_strided")
    if method == "simclr":
        config.simclr.proj_hidden_dims = (128,)
        config.augment.scale = (0.2, 1.0)
    config.optim.warmup_epochs = 0.5
    config.eval.untrained = False
    config.log_every = 10
    config.checkpoint_every = 200
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


def raw_pixel_knn(dataset) -> float:
    def flat(split):
        x = split.images.reshape(len(split.images), -1).astype(np.float32) / 255.0
        return x

    train, test = flat(dataset.train), flat(dataset.test)
    mean = train.mean(0)
    return evaluation.knn_accuracy(
        train - mean, dataset.train.labels, test - mean, dataset.test.labels, num_classes=10
    )


def raw_pixel_kmeans(dataset, seed: int = 0) -> dict[str, float]:
    """The clustering floor: k-means (sklearn, k-means++, 3 inits) on the test split's raw pixels.

    Scored like every clustering figure here (Hungarian-matched ACC, NMI, ARI on
    the test split) with K = the number of classes.
    """
    import sklearn.cluster

    test = dataset.test
    x = test.images.reshape(len(test.images), -1).astype(np.float32) / 255.0
    k = dataset.num_classes
    pred = sklearn.cluster.KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
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


def curve_subsets(dataset, n_train: int, n_test: int, seed: int = 0):
    """The fixed (train, test) subsets of the curve's kNN: the same for both frameworks."""
    rng = np.random.default_rng(seed)

    def pick(split, n):
        if not n or n >= len(split.labels):
            return split
        keep = np.sort(rng.permutation(len(split.labels))[:n])
        return data.Split(images=split.images[keep], labels=split.labels[keep])

    return pick(dataset.train, n_train), pick(dataset.test, n_test)


def eval_train_split(dataset, config):
    """The train split of the final evaluation, capped as ``Experiment.evaluate`` caps it."""
    train, cap = dataset.train, config.eval.max_train_examples
    if cap and cap < len(train.labels):
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(train.labels))[:cap])
        train = data.Split(images=train.images[keep], labels=train.labels[keep])
    return train


def subset_knn(apply_fn, subsets, config, num_classes: int) -> float:
    """kNN top-1 (the final evaluation's k and temperature) on the curve's subsets."""
    train, test = subsets
    bs = config.eval.batch_size
    f_train = evaluation.extract_features(apply_fn, train.images, batch_size=bs)
    f_test = evaluation.extract_features(apply_fn, test.images, batch_size=bs)
    return evaluation.knn_accuracy(
        f_train,
        train.labels,
        f_test,
        test.labels,
        num_classes=num_classes,
        k=config.eval.knn_k,
        temperature=config.eval.knn_temperature,
    )


class CpuSampler:
    """Samples this process's and the machine's busy CPU seconds every second (a thread).

    ``share(t0, t1)``: cores used by this benchmark (workers included) and by
    every other process between two ``time.perf_counter()`` instants, as in
    compare_pytorch.CpuShare; ``others_cores`` of 0.5 or more on a 2-core machine
    makes a figure suspect.
    """

    def __init__(self, every: float = 1.0):
        self.samples: list[tuple[float, float, float, tuple[float, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def sample(self) -> None:
        t = time.perf_counter()
        busy, own = compare_pytorch._busy_seconds(), compare_pytorch._own_seconds()
        self.samples.append((t, busy, own, loadavg()))

    def _run(self, every):
        while not self._stop.wait(every):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def share(self, t0: float, t1: float) -> dict | None:
        inside = [s for s in sorted(self.samples) if t0 - 0.5 <= s[0] <= t1 + 0.5]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return None
        (ta, busy_a, own_a, _), (tb, busy_b, own_b, _) = inside[0], inside[-1]
        own, busy = (own_b - own_a) / (tb - ta), (busy_b - busy_a) / (tb - ta)
        return {"own_cores": round(own, 2), "others_cores": round(max(0.0, busy - own), 2)}

    def loadavg_at(self, t: float) -> list[float]:
        """The 1, 5 and 15-minute load averages sampled nearest to ``t``."""
        return list(min(self.samples, key=lambda s: abs(s[0] - t))[3])


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    return {
        "description": f"{compare_pytorch.cpu_model()}, {os.cpu_count()} cores",
        "cpu_model": compare_pytorch.cpu_model(),
        "cpu_count": os.cpu_count(),
        "uname": " ".join(platform.uname()),
    }


# ----------------------------------------------------------------------------
# jssl


def jssl_feature_fn(exp):
    """state -> (uint8 images -> pooled backbone features), one jitted program for all states."""
    size = (exp.config.augment.crop_size, exp.config.augment.crop_size)

    @jax.jit
    def features(variables, images):
        _, aux = exp.model.apply(variables, augment.eval_view(images, size=size), train=False)
        return aux["features"].astype(jnp.float32)

    def for_state(state):
        variables = {"params": state.params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        return lambda images: features(variables, images)

    return for_state


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
        out["eval"] = exp.evaluate(out["state"])
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
    features = jssl_feature_fn(exp)
    nc = exp.dataset.num_classes
    init = exp.init_state()
    curve = [
        {"step": 0, "minutes": 0.0, "knn_top1": subset_knn(features(init), subsets, config, nc)}
    ]
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints + 10)
    try:
        for s in sorted(ckpt.manager.all_steps()):
            if s == 0:
                continue
            seconds, loss = times.get(s, (train_s, float("nan")))
            kept = ckpt.restore(init, step=s)
            knn = subset_knn(features(kept), subsets, config, nc)
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
# PyTorch reference (imported only here)


def torch_optimizer(torch, model, config):
    """The jssl run's optimiser in PyTorch: SGD, or LARS written out as optax.lars does it."""
    oc = config.optim
    groups = compare_pytorch.torch_param_groups(model, oc.weight_decay)
    if oc.name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=oc.momentum, nesterov=oc.nesterov)
    if oc.name != "lars":
        sys.exit(f"error: --framework torch supports optim sgd and lars, not {oc.name!r}")

    class Lars(torch.optim.Optimizer):
        """optax.lars: u = g + wd*p; u *= 0.001*|p|/|u| (kernels only; 1 if a norm is 0);
        buf = -lr*u + momentum*buf; p += buf. Biases and BatchNorm: no decay, no ratio."""

        def __init__(self, groups, momentum, trust_coefficient=0.001):
            super().__init__(groups, dict(lr=0.0, momentum=momentum, trust=False))
            self.trust_coefficient = trust_coefficient

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    u = p.grad
                    if group["trust"]:
                        u = u.add(p, alpha=group["weight_decay"])
                        pn, un = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
                        ratio = torch.where(
                            (pn > 0) & (un > 0), self.trust_coefficient * pn / un, 1.0
                        )
                        u = u * ratio
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.zeros_like(p)
                    buf.mul_(group["momentum"]).add_(u, alpha=-group["lr"])
                    p.add_(buf)

    groups[0]["trust"], groups[1]["trust"] = True, False  # kernels; biases and norms
    return Lars(groups, momentum=oc.momentum)


def run_torch(args, config, sampler: CpuSampler) -> dict:
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f'error: --framework torch needs PyTorch ({e}); pip install -e ".[bench]"')
    import warnings

    if args.method != "simclr":
        sys.exit("error: the PyTorch reference is SimCLR only (--method simclr)")
    a = config.augment
    policy = (a.crop_size, a.strength, a.jitter_p, a.gray_p, a.blur_p, a.flip)
    if policy != (32, 0.5, 0.8, 0.2, 0.0, True) or config.simclr.proj_dim != 128:
        sys.exit("error: the PyTorch reference implements configs/simclr.py:cifar10_folder only")
    # DataLoader workers are forked; they never touch JAX (see compare_pytorch.py).
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
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
        model = compare_pytorch.build_torch_model(torch, spec)
        model.train()
        return model, torch_optimizer(torch, model, config)

    two_views = compare_pytorch.torch_two_views_dataset(
        torch, dataset.train.images, compare_pytorch.torch_view_transform(scale=tuple(a.scale))
    )

    def batches(persistent: bool):
        loader = compare_pytorch.torch_loader(torch, two_views, bs, args.workers, persistent)
        while True:
            for v1, v2 in loader:
                yield torch.cat([v1, v2])

    def train_step(model, opt, x, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        return compare_pytorch.torch_simclr_step(torch, model, opt, x, temperature)

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
    steps_per_epoch = len(dataset.train.labels) // bs
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

    def apply_fn_of(state_dict):
        model.load_state_dict(state_dict)
        model.eval()

        def apply_fn(images):
            x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div(255.0)
            with torch.no_grad():
                return model.backbone(x.contiguous()).numpy()

        return apply_fn

    # The final evaluation: jssl's evaluate_features on the frozen backbone's features.
    t_eval = time.perf_counter()
    apply_fn = apply_fn_of(kept[-1][3])
    train = eval_train_split(dataset, config)
    ebs = config.eval.batch_size
    f_train = evaluation.extract_features(apply_fn, train.images, batch_size=ebs)
    f_test = evaluation.extract_features(apply_fn, dataset.test.images, batch_size=ebs)
    results = evaluation.evaluate_features(
        f_train,
        train.labels,
        f_test,
        dataset.test.labels,
        num_classes=dataset.num_classes,
        knn_k=config.eval.knn_k,
        knn_temperature=config.eval.knn_temperature,
        probe_epochs=config.eval.probe_epochs,
        seed=config.seed,
    )
    eval_s = time.perf_counter() - t_eval
    results["eval_seconds"] = eval_s

    t_curve = time.perf_counter()
    subsets = curve_subsets(dataset, args.curve_train, args.curve_test)
    curve = []
    for s, seconds, loss, state_dict in kept:
        knn = subset_knn(apply_fn_of(state_dict), subsets, config, dataset.num_classes)
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
    run = run_torch if args.framework == "torch" else run_jssl
    with CpuSampler() as sampler:
        r = run(args, config, sampler)
    dataset = r.pop("dataset")
    final = r.pop("eval")
    versions = compare_pytorch.versions()
    versions.update(r.pop("torch_versions", {}))
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
            "train": min(args.curve_train or 10**9, len(dataset.train.labels)),
            "test": min(args.curve_test or 10**9, len(dataset.test.labels)),
            "seed": 0,
        },
        "machine": {**machine(), "loadavg_1_5_15_at_start": load_start},
        "loadavg_1_5_15_before": r.pop("loadavg_1_5_15_before"),
        "loadavg_1_5_15_after": r.pop("loadavg_1_5_15_after"),
        "cpu_during_train": r.pop("cpu_during_train"),
        **r,
        "versions": versions,
        "jax": jax.__version__,
        "data": f"{args.data} ({len(dataset.train.labels)} train, {len(dataset.test.labels)} test)",
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
