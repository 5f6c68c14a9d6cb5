"""The same SimCLR work in jssl and in a plain PyTorch reference, one after the other.

    python benchmarks/compare_pytorch.py                  # ResNet w=16, 1 block/stage, batch 256
    python benchmarks/compare_pytorch.py --arch=resnet18  # ResNet-18, CIFAR stem
    python benchmarks/compare_pytorch.py --frameworks=jssl  # no PyTorch needed

PyTorch is a benchmark-only dependency: ``pip install -e ".[bench]"``; it is
imported only inside the PyTorch half, so nothing else in jssl needs it. The
PyTorch reference itself (network, NT-Xent, transforms, DataLoader, step) is
benchmarks/torch_reference.py, shared with benchmarks/budget.py.

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

from benchmarks import torch_reference as ref  # noqa: E402
from benchmarks.common import (  # noqa: E402
    DEFAULT_ARCHIVE,
    CpuSampler,
    all_images,
    cpu_model,
    image_folder,
    versions,
)
from benchmarks.throughput import load_config, matmul_flops_per_sec, write_result  # noqa: E402
from jssl import augment, data, sharding, trainer  # noqa: E402
from jssl.methods import parts, simclr  # noqa: E402
from jssl.models import count_params  # noqa: E402
from jssl.models.conv import CONV_IMPLS  # noqa: E402
from jssl.train_step import train_step  # noqa: E402

ARCHS = {
    # The CPU-sized ResNet of benchmarks/budget.py and PERF-NOTES.md.
    "small": dict(width=16, stage_sizes=(1, 1, 1, 1), proj_hidden=128),
    # ResNet-18 with the CIFAR stem; SimCLR's head width = feature width.
    "resnet18": dict(width=64, stage_sizes=(2, 2, 2, 2), proj_hidden=512),
}
SCALE = ref.SCALE
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
        conv_impl=spec.get("conv_impl", "auto"),
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
        root = image_folder(path)
        t0 = time.perf_counter()
        dataset = data.load_dataset("image_folder", path=root)
        print(f"loaded {root} in {time.perf_counter() - t0:.1f} s", flush=True)
        desc = f"CIFAR-10 JPEG copy ({os.path.basename(path)}), train split"
        return all_images(dataset.train), desc
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
    cpu_sampler = CpuSampler()

    # (a) the generic train step on fixed views: the view maker reads them from the batch.
    no_aug = dataclasses.replace(
        simclr.SIMCLR, make_views=lambda key, batch, config: (batch["view1"], batch["view2"])
    )
    rep = sharding.replicated(exp.mesh)
    step_fn = jax.jit(
        functools.partial(
            train_step, method=no_aug, model=exp.model, tx=exp.tx, schedule=exp.schedule,
            config=config, run=exp.run,
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
    with cpu_sampler.phase() as cpu:
        sec = timed(one_step, args.steps)
    out["step_cpu"] = cpu
    out["step_seconds"] = sec
    out["step_images_per_sec"] = bs / sec
    out["step_flops_per_sec"] = out["xla_flops_per_step"] / sec
    print(
        f"jssl   (a) step on fixed views: {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )
    if args.profile:
        out["step_profile"] = xla_profile(one_step, args.steps, args.profile)
        print_profile("jssl", out["step_profile"], sec)
    state, holder, batch, compiled = holder["state"], None, None, None

    if not args.quick:  # augmentation alone (jitted two_views on fixed uint8 images)
        aug = jax.jit(functools.partial(augment.two_views, **parts.simclr_policy(config)))
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
    with cpu_sampler.phase() as cpu:
        t0 = time.perf_counter()
        for i in range(args.e2e_steps):
            m = e2e_step(args.warmup + i)  # async dispatch: the next gather overlaps this step
        jax.block_until_ready(m["loss"])
        sec = (time.perf_counter() - t0) / args.e2e_steps
    out["e2e_cpu"] = cpu
    out["e2e_seconds_per_step"] = sec
    out["e2e_images_per_sec"] = bs / sec
    out["e2e_final_loss"] = float(m["loss"])
    print(
        f"jssl   (b) end to end:          {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )
    return out


# ----------------------------------------------------------------------------
# PyTorch reference (benchmarks/torch_reference.py; PyTorch is imported only here)


def run_torch(args, spec, images, views) -> dict:
    torch, torchvision = ref.import_torch("PyTorch is needed for this half")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bs = args.batch_size
    out = {"torch_threads": torch.get_num_threads(), "channels_last": args.channels_last}
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    cpu_sampler = CpuSampler()

    model = ref.build_torch_model(torch, spec).to(memory_format=fmt)
    model.train()
    out["param_count"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(
        ref.torch_param_groups(model, WEIGHT_DECAY), lr=LEARNING_RATE, momentum=MOMENTUM
    )

    def train_step(x):
        return ref.torch_simclr_step(torch, model, opt, x, TEMPERATURE, memory_format=fmt)

    # (a) fixed views: the same float32 arrays as jssl's, NHWC -> NCHW.
    x = torch.from_numpy(np.concatenate(views).transpose(0, 3, 1, 2).copy())
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        train_step(x)
    out["step_warmup_seconds"] = time.perf_counter() - t0
    with cpu_sampler.phase() as cpu:
        sec = timed(lambda i: train_step(x), args.steps)
    out["step_cpu"] = cpu
    out["step_seconds"] = sec
    out["step_images_per_sec"] = bs / sec
    print(
        f"torch  (a) step on fixed views: {bs / sec:7.1f} images/s ({sec:.3f} s/step)", flush=True
    )
    if args.profile:
        out["step_profile"] = torch_profile(torch, lambda: train_step(x), args.steps)
        print_profile("torch", out["step_profile"], sec)

    # (b) end to end: torchvision transforms on PIL images in a DataLoader with workers.
    two_views = ref.torch_two_views_dataset(torch, images, ref.torch_view_transform(SCALE))
    loader = ref.torch_loader(torch, two_views, bs, args.workers)
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
    with cpu_sampler.phase() as cpu:
        sec = timed(lambda i: losses.append(e2e_step(i)), args.e2e_steps)
    out["e2e_cpu"] = cpu
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
        out["matmul_flops_per_sec"] = ref.torch_matmul_flops_per_sec(torch)
    out["versions"] = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    return out


# ----------------------------------------------------------------------------
# Where a step's time goes, per op (--profile)

PROFILE_ROWS = 15  # the ops kept per framework, by total time
XLA_WRAPPERS = ("ThunkExecutor", "Execute", "PjRt", "ExecuteHelper")  # not ops


def _kind(name: str) -> str:
    """An XLA op's kind: its HLO instruction name without the ".N" suffix."""
    head, _, tail = name.rpartition(".")
    return head if head and tail.isdigit() else name


def _rows(totals: dict[str, float], steps: int) -> list[dict]:
    """{name: seconds over ``steps``} -> rows of ms per step and share, largest first."""
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return [
        {"op": k, "ms_per_step": 1e3 * v / steps, "share": v / whole}
        for k, v in ranked[:PROFILE_ROWS]
    ]


def xla_profile(one_step, steps: int, folder: str) -> dict:
    """``steps`` calls of ``one_step`` traced by jax.profiler (XLA:CPU reports each thunk
    as an event with its HLO instruction name when --xla_cpu_enable_xprof_traceme=true, set
    by main); the ops' CPU time summed over the worker threads, per op and per kind."""
    import glob

    with jax.profiler.trace(folder):
        for i in range(steps):
            one_step(i)
    files = sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True))
    data = jax.profiler.ProfileData.from_file(files[-1])
    ops: dict[str, float] = {}
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's worker threads only
                continue
            for event in line.events:
                if not any(w in event.name for w in XLA_WRAPPERS):
                    ops[event.name] = ops.get(event.name, 0.0) + event.duration_ns * 1e-9
    kinds: dict[str, float] = {}
    for name, seconds in ops.items():
        kinds[_kind(name)] = kinds.get(_kind(name), 0.0) + seconds
    return {
        "cpu_ms_per_step": 1e3 * sum(ops.values()) / steps,
        "by_kind": _rows(kinds, steps),
        "by_op": _rows(ops, steps),
    }


def torch_profile(torch, one_step, steps: int) -> dict:
    """``steps`` calls of ``one_step`` under torch.profiler: each aten op's own CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one_step()
    ops = {e.key: e.self_cpu_time_total * 1e-6 for e in prof.key_averages()}
    return {
        "cpu_ms_per_step": 1e3 * sum(ops.values()) / steps,
        "by_kind": _rows(ops, steps),
        "by_op": [],
    }


def print_profile(framework: str, profile: dict, step_seconds: float) -> None:
    print(
        f"{framework}: ops take {profile['cpu_ms_per_step']:.0f} ms of CPU time per step "
        f"({step_seconds * 1e3:.0f} ms of wall time)"
    )
    for row in profile["by_kind"]:
        print(f"  {row['ms_per_step']:9.1f} ms {100 * row['share']:5.1f}%  {row['op']}")


# ----------------------------------------------------------------------------


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
        default="auto",
        choices=CONV_IMPLS,
        help="jssl's convolutions (jssl.models.conv; auto: the CPU's backward in batch chunks)",
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
    p.add_argument(
        "--profile",
        default="",
        help="folder for a jax.profiler trace: adds each framework's per-op time of step (a)",
    )
    args = p.parse_args(argv)
    if args.profile:  # read when the CPU backend starts, which no import above has done
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
        ).strip()
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
            "xla_flags": os.environ.get("XLA_FLAGS", ""),  # jssl.xla_cpu's, unless named
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
    tag = f"{args.arch}_w{spec['width']}_b{args.batch_size}_{args.conv_impl}_{result['date'][:10]}"
    write_result(result, f"compare_pytorch_{tag}.json", args.out)
    return result


if __name__ == "__main__":
    main()
