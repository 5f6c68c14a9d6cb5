"""The same SimCLR work in jssl and in a plain PyTorch reference, one after the other.

    python benchmarks/compare_pytorch.py                  # ResNet w=16, 1 block/stage, batch 256
    python benchmarks/compare_pytorch.py --arch=resnet18  # ResNet-18, CIFAR stem
    python benchmarks/compare_pytorch.py --frameworks=jssl  # no PyTorch needed

PyTorch is a benchmark-only dependency: ``pip install -e ".[bench]"``; it is
imported only inside the PyTorch half, so nothing else in jssl needs it.

Both frameworks train the same network: a ResNet with a 3x3 stride-1 stem,
basic blocks (widths w, 2w, 4w, 8w), global average pooling and SimCLR's
projection head Linear(no bias)-BN-ReLU-Linear -> 128, with NT-Xent
(temperature 0.5) on one forward pass over both views (BatchNorm statistics
of the 2N views), and SGD with momentum 0.9 and weight decay on the kernels
only. The parameter counts of the two models are printed and must match.

Two figures per framework, in images/s (one image = one pair of views):

(a) step: fwd + bwd + optimiser update on fixed, already augmented views (the
    same float32 arrays for both), so it measures the network and optimiser
    alone. jssl runs its generic ``train_step`` with the view maker replaced by
    "take the views from the batch".
(b) end to end: from the uint8 training images in memory to updated weights,
    augmentation included. jssl: ``Experiment.global_batch`` (host gather) then
    the jitted step, which augments on device (``augment.two_views``). PyTorch:
    the usual recipe, a ``Dataset`` over the same uint8 array that returns two
    views of ``Image.fromarray(x)`` through torchvision.transforms
    (RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter, 0.8),
    RandomGrayscale(0.2), ToTensor), in a ``DataLoader`` with workers, as
    torchvision's CIFAR10 data set does.

The augmentation policy is the same in both: crop scale (0.2, 1), ratio
(3/4, 4/3), flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale
with p=0.2, no blur, no normalisation, 32x32 output.

Compilation and warm-up steps are timed separately from the timed steps. The
data are the CIFAR-10 JPEG copy (../shared/datasets/cifar10-jpeg.tar.gz, unpacked
under the temp folder and decoded once into jssl's cache), or synthetic uint8
images when it is absent (or with --synthetic). Writes a JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.throughput import load_config, matmul_flops_per_sec, write_result  # noqa: E402
from jssl import augment, data, sharding, trainer  # noqa: E402
from jssl.methods import simclr  # noqa: E402
from jssl.models import count_params  # noqa: E402
from jssl.models.conv import CONV_IMPLS  # noqa: E402
from jssl.train_step import train_step  # noqa: E402

DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")
ARCHS = {
    # The CPU-sized ResNet of benchmarks/budget.py and PERF-NOTES.md.
    "small": dict(width=16, stage_sizes=(1, 1, 1, 1), proj_hidden=128),
    # ResNet-18 with the CIFAR stem; SimCLR's head width = feature width.
    "resnet18": dict(width=64, stage_sizes=(2, 2, 2, 2), proj_hidden=512),
}
SCALE = (0.2, 1.0)
TEMPERATURE = 0.5
LEARNING_RATE = 0.1  # SGD; the value does not change the cost of a step
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4


# ----------------------------------------------------------------------------
# Setup shared by both halves


def arch_spec(args) -> dict:
    spec = dict(ARCHS[args.arch])
    if args.stage_sizes:
        spec["stage_sizes"] = tuple(int(n) for n in args.stage_sizes.split(","))
    spec["conv_impl"] = args.conv_impl
    if args.width:
        spec["width"] = args.width
        if args.arch == "resnet18":
            spec["proj_hidden"] = args.width * 8
    return spec


def make_config(spec: dict, batch_size: int) -> ml_collections.ConfigDict:
    config = load_config("configs/simclr.py:cifar10_folder")
    config.batch_size = batch_size
    config.model.name = "resnet18"  # the preset's ResNet arguments, CIFAR stem
    config.model.kwargs.update(
        width=spec["width"],
        stage_sizes=tuple(spec["stage_sizes"]),
        conv_impl=spec.get("conv_impl", "xla"),
    )
    config.simclr.proj_hidden_dims = (spec["proj_hidden"],)
    config.simclr.temperature = TEMPERATURE
    config.augment.scale = SCALE
    config.optim.name = "sgd"
    config.optim.learning_rate = LEARNING_RATE
    config.optim.scale_lr_by_batch = False
    config.optim.momentum = MOMENTUM
    config.optim.weight_decay = WEIGHT_DECAY
    config.optim.warmup_epochs = 0.0
    config.num_steps = 1000
    return config


def load_images(args) -> tuple[np.ndarray, str]:
    """uint8 [N, 32, 32, 3] training images and a description of where they came from."""
    path = args.data
    if not args.synthetic and os.path.exists(path):
        from benchmarks.budget import image_folder

        root = image_folder(path)
        t0 = time.perf_counter()
        dataset = data.load_dataset("image_folder", path=root)
        print(f"loaded {root} in {time.perf_counter() - t0:.1f} s", flush=True)
        return dataset.train.images, f"CIFAR-10 JPEG copy ({os.path.basename(path)}), train split"
    if not args.synthetic:
        print(f"{path} not found: using synthetic images", flush=True)
    n = args.batch_size * (args.warmup + max(args.steps, args.e2e_steps) + 2)
    images = np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return images, f"synthetic uniform uint8, {n} images"


def fixed_views(images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 [B, 32, 32, 3] views in [0, 1] (the values do not change a step's cost)."""
    rng = np.random.default_rng(1)
    shape = (batch_size, *images.shape[1:])
    return tuple(rng.random(shape, dtype=np.float32) for _ in range(2))


def images_dataset(images: np.ndarray) -> data.Dataset:
    split = data.Split(images=images, labels=np.zeros(len(images), np.int32))
    return data.Dataset(
        train=split, test=split, num_classes=10, class_names=tuple("0123456789"), name="bench"
    )


def _busy_seconds() -> float:
    """CPU seconds all processes have run since boot (/proc/stat), 0 where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process (all threads) and its live children (DataLoader workers)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return total
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                total += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
    return total


class CpuShare:
    """Cores busy during a timed phase: this benchmark's own and everyone else's.

    ``others_cores`` near 0 means the phase ran on an otherwise idle machine; on
    the shared 2-core machines a value of 0.5 or more makes the figure suspect.
    """

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        own = (_own_seconds() - self.own) / wall
        busy = (_busy_seconds() - self.busy) / wall
        self.result = {"own_cores": round(own, 2), "others_cores": round(max(0.0, busy - own), 2)}


def timed(fn, steps: int) -> float:
    """Seconds per call of fn() over ``steps`` calls (fn blocks on its own result)."""
    t0 = time.perf_counter()
    for i in range(steps):
        fn(i)
    return (time.perf_counter() - t0) / steps


# ----------------------------------------------------------------------------
# jssl


def run_jssl(args, spec, images, views) -> dict:
    config = make_config(spec, args.batch_size)
    devices = jax.devices()[: args.devices] if args.devices else None
    exp = trainer.Experiment(config, devices, dataset=images_dataset(images))
    bs = args.batch_size
    out = {"devices": [str(d) for d in exp.mesh.devices.flat]}

    # (a) the generic train step on fixed views: the view maker reads them from the batch.
    no_aug = dataclasses.replace(
        simclr.SIMCLR, make_views=lambda key, batch, config: (batch["view1"], batch["view2"])
    )
    rep = sharding.replicated(exp.mesh)
    step_fn = jax.jit(
        functools.partial(
            train_step, method=no_aug, model=exp.model, tx=exp.tx, schedule=exp.schedule,
            config=config,
        ),
        in_shardings=(rep, sharding.data_sharded(exp.mesh)),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )  # fmt: skip
    batch = sharding.put_global_batch({"view1": views[0], "view2": views[1]}, exp.mesh)
    state = exp.init_state()
    out["param_count"] = count_params(state.params)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    out["step_compile_seconds"] = time.perf_counter() - t0  # lower + compile, no step
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["xla_flops_per_step"] = float(cost.get("flops", float("nan")))
    holder = {"state": state}

    def one_step(_):
        holder["state"], m = compiled(holder["state"], batch)
        jax.block_until_ready(m["loss"])

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        one_step(0)
    out["step_warmup_seconds"] = time.perf_counter() - t0
    with CpuShare() as cpu:
        sec = timed(one_step, args.steps)
    out["step_cpu"] = cpu.result
    out["step_seconds"] = sec
    out["step_images_per_sec"] = bs / sec
    out["step_flops_per_sec"] = out["xla_flops_per_step"] / sec
    print(
        f"jssl   (a) step on fixed views: {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )
    state, holder, batch, compiled = holder["state"], None, None, None

    if not args.quick:  # augmentation alone (jitted two_views on fixed uint8 images)
        aug = jax.jit(functools.partial(augment.two_views, **simclr.policy_kwargs(config)))
        raw = images[:bs]
        keys = [jax.random.fold_in(jax.random.PRNGKey(0), i) for i in range(args.steps + 1)]
        jax.block_until_ready(aug(keys[-1], raw))
        sec = timed(lambda i: jax.block_until_ready(aug(keys[i], raw)), args.steps)
        out["augment_only_images_per_sec"] = bs / sec
        print(f"jssl   augmentation alone:      {bs / sec:7.1f} images/s", flush=True)

    # (b) end to end: host gather + jitted step with on-device augmentation, as the trainer does.
    holder = {"state": state}  # carries on from (a): same layout, no second init

    def e2e_step(i):
        holder["state"], m = exp.train_step(holder["state"], exp.global_batch(i))
        return m

    t0 = time.perf_counter()
    jax.block_until_ready(e2e_step(0)["loss"])
    out["e2e_compile_and_first_step_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(1, args.warmup):
        jax.block_until_ready(e2e_step(i)["loss"])
    out["e2e_warmup_seconds"] = time.perf_counter() - t0
    with CpuShare() as cpu:
        t0 = time.perf_counter()
        for i in range(args.e2e_steps):
            m = e2e_step(args.warmup + i)  # async dispatch: the next gather overlaps this step
        jax.block_until_ready(m["loss"])
        sec = (time.perf_counter() - t0) / args.e2e_steps
    out["e2e_cpu"] = cpu.result
    out["e2e_seconds_per_step"] = sec
    out["e2e_images_per_sec"] = bs / sec
    out["e2e_final_loss"] = float(m["loss"])
    print(
        f"jssl   (b) end to end:          {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )
    return out


# ----------------------------------------------------------------------------
# PyTorch reference (imported only here)


def build_torch_model(torch, spec: dict):
    nn = torch.nn

    def conv(cin, cout, k, stride):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = conv(cout, cout, 3, 1), nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu((x if self.proj is None else self.proj(x)) + y)

    class SimCLRNet(nn.Module):
        def __init__(self, width, stage_sizes, proj_hidden, proj_dim=128):
            super().__init__()
            layers = [conv(3, width, 3, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
            for i, n in enumerate(stage_sizes):
                for j in range(n):
                    cout = width * 2**i
                    layers.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
                    cin = cout
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.backbone = nn.Sequential(*layers)
            self.head = nn.Sequential(
                nn.Linear(cin, proj_hidden, bias=False),
                nn.BatchNorm1d(proj_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(proj_hidden, proj_dim),
            )
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            return self.head(self.backbone(x))

    return SimCLRNet(spec["width"], spec["stage_sizes"], spec["proj_hidden"])


def torch_nt_xent(torch, z1, z2, temperature: float):
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool)
    logits = logits.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return torch.nn.functional.cross_entropy(logits, targets)


def torch_matmul_flops_per_sec(torch, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n)
    a @ a
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def torch_view_transform(scale=SCALE, size: int = 32):
    """One SimCLR view the usual torchvision way (PIL image -> float [3, H, W] in [0, 1])."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=scale, antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ]
    )


def torch_two_views_dataset(torch, images: np.ndarray, view):
    """A ``Dataset`` over uint8 [N, H, W, 3] images returning two views of ``Image.fromarray``."""
    from PIL import Image

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            img = Image.fromarray(images[i])
            return view(img), view(img)

    return TwoViews()


def torch_loader(torch, dataset, batch_size: int, workers: int, persistent: bool = True):
    """The usual shuffled DataLoader of (view 1, view 2) batches, with ``workers`` workers."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=persistent and workers > 0,
    )


def torch_simclr_step(torch, model, opt, x, temperature: float, memory_format=None) -> float:
    """One NT-Xent update on ``x`` = [view 1; view 2] (NCHW); returns the loss."""
    opt.zero_grad(set_to_none=True)
    z = model(x.contiguous(memory_format=memory_format or torch.contiguous_format))
    n = x.shape[0] // 2
    loss = torch_nt_xent(torch, z[:n], z[n:], temperature)
    loss.backward()
    opt.step()
    return loss.item()


def torch_param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on kernels (ndim > 1) only, as jssl's ``weight_decay_mask``."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def run_torch(args, spec, images, views) -> dict:
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f'error: PyTorch is needed for this half ({e}); pip install -e ".[bench]"')
    import warnings

    # DataLoader workers are forked, as usual on Linux; they never touch JAX, whose
    # threads sit idle by now, so JAX's warning about fork does not apply.
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bs = args.batch_size
    out = {"torch_threads": torch.get_num_threads(), "channels_last": args.channels_last}
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    model = build_torch_model(torch, spec).to(memory_format=fmt)
    model.train()
    out["param_count"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(
        torch_param_groups(model, WEIGHT_DECAY), lr=LEARNING_RATE, momentum=MOMENTUM
    )

    def train_step(x):
        return torch_simclr_step(torch, model, opt, x, TEMPERATURE, memory_format=fmt)

    # (a) fixed views: the same float32 arrays as jssl's, NHWC -> NCHW.
    x = torch.from_numpy(np.concatenate(views).transpose(0, 3, 1, 2).copy())
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        train_step(x)
    out["step_warmup_seconds"] = time.perf_counter() - t0
    with CpuShare() as cpu:
        sec = timed(lambda i: train_step(x), args.steps)
    out["step_cpu"] = cpu.result
    out["step_seconds"] = sec
    out["step_images_per_sec"] = bs / sec
    print(
        f"torch  (a) step on fixed views: {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )

    # (b) end to end: torchvision transforms on PIL images in a DataLoader with workers.
    two_views = torch_two_views_dataset(torch, images, torch_view_transform())
    loader = torch_loader(torch, two_views, bs, args.workers)
    out["dataloader_workers"] = args.workers
    it = iter(loader)

    def e2e_step(_):
        v1, v2 = next(it)
        return train_step(torch.cat([v1, v2]))

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes starting the workers
        e2e_step(0)
    out["e2e_warmup_seconds"] = time.perf_counter() - t0
    losses = []
    with CpuShare() as cpu:
        sec = timed(lambda i: losses.append(e2e_step(i)), args.e2e_steps)
    out["e2e_cpu"] = cpu.result
    it = loader = None  # stops the persistent workers
    out["e2e_seconds_per_step"] = sec
    out["e2e_images_per_sec"] = bs / sec
    out["e2e_final_loss"] = losses[-1]
    print(
        f"torch  (b) end to end:          {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )

    if not args.quick:  # augmentation alone: the DataLoader without training
        loader = torch.utils.data.DataLoader(
            two_views, batch_size=bs, shuffle=True, num_workers=args.workers, drop_last=True
        )
        batches = iter(loader)
        next(batches)
        sec = timed(lambda i: next(batches), max(2, args.e2e_steps // 3))
        batches = loader = None
        out["augment_only_images_per_sec"] = bs / sec
        print(f"torch  augmentation alone:      {bs / sec:7.1f} images/s", flush=True)
        out["matmul_flops_per_sec"] = torch_matmul_flops_per_sec(torch)
    out["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    return out


# ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frameworks", default="jssl,torch", help="comma list of jssl, torch")
    p.add_argument("--arch", default="small", choices=sorted(ARCHS))
    p.add_argument("--width", type=int, default=0, help="override the first-stage width")
    p.add_argument("--stage_sizes", default="", help="override the blocks per stage, e.g. 1,1,1,1")
    p.add_argument("--batch_size", type=int, default=256, help="images (pairs of views) per step")
    p.add_argument(
        "--conv_impl",
        default="xla",
        choices=CONV_IMPLS,
        help="jssl: convolutions by XLA, im2col, or im2col for strided ones (jssl.models.conv)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--steps", type=int, default=10, help="timed steps for (a)")
    p.add_argument("--e2e_steps", type=int, default=15, help="timed steps for (b)")
    p.add_argument("--devices", type=int, default=0, help="jssl: use the first N (0: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--channels_last", action="store_true", help="PyTorch in NHWC memory format")
    p.add_argument("--data", default=DEFAULT_ARCHIVE, help="image folder or .tar.gz of one")
    p.add_argument(
        "--synthetic", action="store_true", help="synthetic images even if --data exists"
    )
    p.add_argument(
        "--quick", action="store_true", help="skip the matmul rates and augmentation-alone figures"
    )
    p.add_argument("--out", default="", help="JSON path (default under benchmarks/results/)")
    args = p.parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if not frameworks or set(frameworks) - {"jssl", "torch"}:
        p.error(f"--frameworks must list jssl and/or torch, got {args.frameworks!r}")

    spec = arch_spec(args)
    started = time.perf_counter()
    load_before = os.getloadavg()
    images, data_desc = load_images(args)
    views = fixed_views(images, args.batch_size)
    result = {
        "command": "python benchmarks/compare_pytorch.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "uname": " ".join(platform.uname()),
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_1_5_15_before": load_before,
        },
        "versions": versions(),
        "model": {
            "arch": args.arch,
            "stem": "cifar",
            "block": "basic",
            **spec,
            "proj_dim": 128,
        },
        "batch_size": args.batch_size,
        "views_per_step": 2 * args.batch_size,
        "image_size": 32,
        "augment": "RandomResizedCrop(32, scale=(0.2, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1)"
        " p=0.8, grayscale p=0.2",
        "optimizer": f"SGD lr {LEARNING_RATE} momentum {MOMENTUM} wd {WEIGHT_DECAY} on kernels",
        "data": data_desc,
        "steps": {"warmup": args.warmup, "step": args.steps, "e2e": args.e2e_steps},
    }
    if not args.quick:
        result["jax_matmul_flops_per_sec"] = matmul_flops_per_sec()
    if "jssl" in frameworks:
        result["jssl"] = run_jssl(args, spec, images, views)
    if "torch" in frameworks:
        result["torch"] = run_torch(args, spec, images, views)
        result["versions"].update(result["torch"].pop("versions"))

    j, t = result.get("jssl"), result.get("torch")
    if j and t:
        print(f"param count: jssl {j['param_count']:,}  torch {t['param_count']:,}")
        if j["param_count"] != t["param_count"]:
            raise SystemExit("error: the two models differ in parameter count")
        flops = j["xla_flops_per_step"]
        t["step_flops_per_sec"] = flops / t["step_seconds"]  # same network, same FLOPs
        result["ratio_jssl_over_torch"] = {
            "step": j["step_images_per_sec"] / t["step_images_per_sec"],
            "e2e": j["e2e_images_per_sec"] / t["e2e_images_per_sec"],
        }
        r = result["ratio_jssl_over_torch"]
        print(f"ratio jssl/torch: (a) step {r['step']:.2f}x   (b) end to end {r['e2e']:.2f}x")
    elif j:
        print(f"param count: jssl {j['param_count']:,}")
    result["machine"]["loadavg_1_5_15_after"] = os.getloadavg()
    result["total_seconds"] = time.perf_counter() - started
    print(json.dumps(result, indent=2, default=str))
    impl = "" if args.conv_impl == "xla" else f"_{args.conv_impl}"
    tag = f"{args.arch}_w{spec['width']}_b{args.batch_size}{impl}_{result['date'][:10]}"
    write_result(result, f"compare_pytorch_{tag}.json", args.out)
    return result


if __name__ == "__main__":
    main()
