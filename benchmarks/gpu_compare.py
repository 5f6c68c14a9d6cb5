"""jssl against a PyTorch reference on one GPU, in one command (``bash benchmarks/gpu.sh OUT``).

    python benchmarks/gpu_compare.py --out OUT            # a GPU: < 8 min on an H100/H200
    python benchmarks/gpu_compare.py --out OUT --dry-run  # every piece, tiny, on the CPU

Three workloads, each in jssl and in a PyTorch reference of the same network,
loss and optimiser, on the same GPU, one after the other:

  simclr_resnet18_cifar  SimCLR ResNet-18 (CIFAR stem), 32 px, batch 512  (simclr.py:cifar10)
  simclr_resnet50_224    SimCLR ResNet-50, 224 px, batch 256              (simclr.py:imagenet)
  dino_vits16_224        DINO ViT-S/16, 2 x 224 + 10 x 96 crops, batch 128 (dino.py:imagenet)

jssl: the preset's own ``Experiment`` and jitted train step (augmentation on
device inside the step, bf16 compute with float32 parameters: ``model.dtype =
"bfloat16"``) on synthetic uint8 images; XLA's FLOPs per step from
``compiled.cost_analysis()``; the augmentation alone is also timed, so the
share of the step it takes is visible.

PyTorch: the same network (torchvision's ResNets when torchvision is there,
with the CIFAR stem swapped in as usual; else the equivalent ResNet written
below; timm's ViT when timm is there, else the timm-style ViT below), the same
head, loss (NT-Xent; DINO's loss with centring, sharpening and an EMA teacher)
and optimiser (LARS as optax.lars, written with foreach ops; DINO's AdamW with
per-tensor clipping), bf16 autocast, float32 parameters, channels_last for the
ResNets, ``torch.compile`` for the ResNets by default (``--torch-compile``);
the steps run on fixed, already augmented views on the GPU (PyTorch's
augmentation would run in a CPU DataLoader, which is not measured here), so the
jssl/PyTorch ratio charges jssl for its augmentation and PyTorch for none. FLOPs
per step from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions and attention only; XLA counts every operation). The parameter
counts of both networks are recorded side by side.

Utilisation is each framework's FLOPs per second over a bf16 matmul
(8192 x 8192) measured by that framework in the same run.

End to end: SimCLR ResNet-18 (configs/simclr.py:cifar10_folder, bf16, batch
512, the 1000-epoch LARS recipe) on the CIFAR-10 JPEG copy (``--data``, a
folder or the .tar.gz) for ``--e2e-minutes`` of training (fewer if the
``--deadline-minutes`` budget of the whole command is short), then jssl's
weighted kNN (k=20, T=0.07) on the test split, and the wall clock the whole
1000-epoch recipe would take at the measured speed.

Each framework and the end-to-end run are separate processes (``--part``), so
JAX's and PyTorch's GPU memory pools never meet and a failing part leaves the
others' results. Writes OUT/gpu_compare.json and OUT/gpu_compare.md (and the
parts' JSON); exits 1 if a part failed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PARTS = ("jssl", "torch", "e2e")
DATA_CANDIDATES = (
    os.path.join(ROOT, "shared", "datasets", "cifar10-jpeg.tar.gz"),
    os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz"),
)

# name -> (config spec, batch size, synthetic source image side, description)
WORKLOADS = {
    "simclr_resnet18_cifar": (
        "configs/simclr.py:cifar10",
        512,
        32,
        "SimCLR ResNet-18 (CIFAR stem), 32 px, batch 512",
    ),
    "simclr_resnet50_224": (
        "configs/simclr.py:imagenet",
        256,
        256,
        "SimCLR ResNet-50, 224 px, batch 256",
    ),
    "dino_vits16_224": (
        "configs/dino.py:imagenet",
        128,
        256,
        "DINO ViT-S/16, 2x224 + 10x96 crops, batch 128",
    ),
}

# --dry-run: the same code at tiny sizes (seconds on a CPU). Dotted config fields.
TINY = {
    "simclr_resnet18_cifar": dict(
        batch=8,
        image=16,
        set={
            "augment.crop_size": 16,
            "model.kwargs.width": 4,
            "model.kwargs.stage_sizes": (1, 1),
            "simclr.proj_hidden_dims": (32,),
        },
    ),
    "simclr_resnet50_224": dict(
        batch=4,
        image=40,
        set={
            "augment.crop_size": 32,
            "model.kwargs.width": 4,
            "model.kwargs.stage_sizes": (1, 1),
            "simclr.proj_hidden_dims": (32,),
        },
    ),
    "dino_vits16_224": dict(
        batch=4,
        image=40,
        set={
            "augment.crop_size": 32,
            "augment.local_crop_size": 16,
            "augment.num_local_crops": 2,
            "model.kwargs": {
                "patch_size": 16,
                "image_size": 32,
                "hidden": 32,
                "depth": 1,
                "num_heads": 2,
                "mlp_dim": 64,
            },
            "dino.out_dim": 64,
            "dino.hidden_dim": 32,
            "dino.bottleneck_dim": 16,
        },
    ),
}
TINY_E2E = {
    "batch_size": 8,
    "model.kwargs.width": 4,
    "model.kwargs.stage_sizes": (1, 1),
    "simclr.proj_hidden_dims": (32,),
    "eval.batch_size": 16,
}


# ----------------------------------------------------------------------------- shared


def load_config(spec: str):
    from benchmarks.throughput import load_config as load

    return load(spec)


def set_fields(config, fields: dict) -> None:
    """Dotted ``fields`` into a ConfigDict (a dict value replaces the whole sub-config)."""
    import ml_collections

    for key, value in fields.items():
        node, parts = config, key.split(".")
        for p in parts[:-1]:
            node = node[p]
        if isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        node[parts[-1]] = value


def workload_config(name: str, dry_run: bool):
    """(config, batch size, source image side) of a workload, bf16 compute."""
    spec, batch, image, _ = WORKLOADS[name]
    config = load_config(spec)
    if dry_run:
        batch, image = TINY[name]["batch"], TINY[name]["image"]
        set_fields(config, TINY[name]["set"])
    config.batch_size = batch
    config.model.dtype = "bfloat16"
    return config, batch, image


def full_config(name: str):
    """The full-size config (for parameter counts in a dry run)."""
    config = load_config(WORKLOADS[name][0])
    config.model.dtype = "bfloat16"
    return config


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "chex",
        "numpy",
        "torch",
        "torchvision",
        "timm",
        "triton",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


def steps_for(args) -> tuple[int, int]:
    """(warm-up steps, timed steps)."""
    return (1, 1) if args.dry_run else (args.warmup, args.steps)


# ----------------------------------------------------------------------------- jssl part


def jssl_part(args, out: dict, save) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.throughput import matmul_flops_per_sec
    from jssl import data
    from jssl.experiment import Experiment
    from jssl.models import count_params

    device = jax.devices()[0]
    n = 256 if args.dry_run else 8192
    out.update(
        device=device.device_kind,
        backend=jax.default_backend(),
        matmul_bf16_flops_per_sec=matmul_flops_per_sec(n, repeats=20, dtype=jnp.bfloat16),
        workloads={},
    )
    warmup, steps = steps_for(args)
    for name in args.workloads:
        config, batch, side = workload_config(name, args.dry_run)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(batch, side, side, 3), dtype=np.uint8)
        split = data.Split(images=images, labels=np.zeros(batch, np.int32))
        dataset = data.Dataset(split, split, 10, tuple("0123456789"), "synthetic")
        exp = Experiment(config, [device], dataset=dataset)
        state = exp.init_state()
        batch_arrays = exp.global_batch(0)
        r = {"config": WORKLOADS[name][0], "batch_size": batch, "dtype": config.model.dtype}
        r["param_count"] = count_params(state.params)
        if args.dry_run:  # the full-size network's count, without building it
            fc = full_config(name)
            model = exp.method.build_model(fc)
            x = jax.ShapeDtypeStruct((2, fc.augment.crop_size, fc.augment.crop_size, 3), "float32")
            init = lambda x, model=model: model.init(jax.random.PRNGKey(0), x, train=False)
            shapes = jax.eval_shape(init, x)
            r["full_size_param_count"] = count_params(shapes["params"])
        t0 = time.perf_counter()
        compiled = exp.train_step.lower(state, batch_arrays).compile()
        r["compile_seconds"] = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        r["flops_per_step"] = float(cost.get("flops", float("nan")))
        metrics = None
        for _ in range(warmup):
            state, metrics = compiled(state, batch_arrays)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch_arrays)
        jax.block_until_ready(metrics)
        sec = (time.perf_counter() - t0) / steps
        r["step_seconds"] = sec
        r["images_per_sec"] = batch / sec
        r["flops_per_sec"] = r["flops_per_step"] / sec
        r["utilisation_vs_bf16_matmul"] = r["flops_per_sec"] / out["matmul_bf16_flops_per_sec"]
        r["loss"] = float(metrics["loss"])
        r["finite"] = bool(float(metrics["finite"]) == 1.0)
        out["workloads"][name] = r
        save(out)
        print(f"jssl   {name}: {r['images_per_sec']:9.1f} images/s", flush=True)
        state = compiled = metrics = None

        # The augmentation alone (the method's own view maker, jitted).
        views = jax.jit(lambda key, b, exp=exp, c=config: exp.method.make_views(key, b, c))
        key = jax.random.PRNGKey(1)
        jax.block_until_ready(views(key, batch_arrays))
        t0 = time.perf_counter()
        for i in range(steps):
            v = views(jax.random.fold_in(key, i), batch_arrays)
        jax.block_until_ready(v)
        r["augment_seconds"] = (time.perf_counter() - t0) / steps
        r["augment_share_of_step"] = r["augment_seconds"] / sec
        save(out)
        exp = v = batch_arrays = None


# ----------------------------------------------------------------------------- torch part
#
# PyTorch is imported only here; every builder takes the torch module.


def torch_resnet(torch, name: str, kwargs) -> tuple:
    """(backbone -> pooled features, feature dim, where it came from) for jssl's ResNet kwargs."""
    nn = torch.nn
    block = "bottleneck" if name == "resnet50" else "basic"
    stages, width, stem = tuple(kwargs.stage_sizes), int(kwargs.width), kwargs.stem
    standard = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}.get(name)
    expansion = 4 if block == "bottleneck" else 1
    feature_dim = width * 2 ** (len(stages) - 1) * expansion
    try:
        import torchvision
    except Exception:  # absent, or a build that does not match torch
        torchvision = None
    if torchvision is not None and width == 64 and stages == standard:
        net = getattr(torchvision.models, name)(weights=None)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        return net, feature_dim, f"torchvision {torchvision.__version__} {name}"

    def conv(cin, cout, k, stride):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            cout = planes * expansion
            if block == "basic":
                layers = [conv(cin, planes, 3, stride), nn.BatchNorm2d(planes), nn.ReLU(True)]
                layers += [conv(planes, planes, 3, 1), nn.BatchNorm2d(planes)]
            else:  # v1.5: the stride on the 3x3
                layers = [conv(cin, planes, 1, 1), nn.BatchNorm2d(planes), nn.ReLU(True)]
                layers += [conv(planes, planes, 3, stride), nn.BatchNorm2d(planes), nn.ReLU(True)]
                layers += [conv(planes, cout, 1, 1), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.proj is None else self.proj(x)))

    if stem == "cifar":
        layers = [conv(3, width, 3, 1), nn.BatchNorm2d(width), nn.ReLU(True)]
    else:
        layers = [conv(3, width, 7, 2), nn.BatchNorm2d(width), nn.ReLU(True)]
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    cin = width
    for i, n in enumerate(stages):
        for j in range(n):
            layers.append(Block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
            cin = width * 2**i * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net, feature_dim, "this script's ResNet (torchvision's layout)"


def torch_vit(torch, kwargs) -> tuple:
    """(ViT -> final-LN [CLS] features, width, where it came from) for jssl's ViT kwargs."""
    nn, F = torch.nn, torch.nn.functional
    p, d = int(kwargs.patch_size), int(kwargs.get("hidden", 384))
    depth, heads = int(kwargs.get("depth", 12)), int(kwargs.get("num_heads", 6))
    mlp, size = int(kwargs.get("mlp_dim", 1536)), int(kwargs.image_size)
    try:
        import timm

        net = timm.models.vision_transformer.VisionTransformer(
            img_size=size,
            patch_size=p,
            embed_dim=d,
            depth=depth,
            num_heads=heads,
            mlp_ratio=mlp / d,
            qkv_bias=True,
            num_classes=0,
            dynamic_img_size=True,
        )
        return net, d, f"timm {timm.__version__} VisionTransformer"
    except Exception:  # no timm (or one without dynamic_img_size): the ViT below
        pass

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)

        def forward(self, x):
            b, t, _ = x.shape
            qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            g = size // p
            self.patch_embed = nn.Conv2d(3, d, p, stride=p)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + g * g, d))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(d, eps=1e-6)
            self.grid = g

        def forward(self, x):
            x = self.patch_embed(x)
            b, _, gh, gw = x.shape
            x = x.flatten(2).transpose(1, 2)
            pos = self.pos_embed[:, 1:]
            if (gh, gw) != (self.grid, self.grid):  # DINO's bicubic interpolation
                pos = pos.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
                pos = F.interpolate(pos, size=(gh, gw), mode="bicubic", align_corners=False)
                pos = pos.permute(0, 2, 3, 1).reshape(1, gh * gw, d)
            cls = self.cls_token.expand(b, -1, -1) + self.pos_embed[:, :1]
            x = torch.cat([cls, x + pos], dim=1)
            return self.norm(self.blocks(x))[:, 0]

    return ViT(), d, "this script's timm-style ViT (scaled_dot_product_attention)"


def torch_simclr_net(torch, config):
    nn = torch.nn
    backbone, dim, source = torch_resnet(torch, config.model.name, config.model.kwargs)
    layers, cin = [], dim
    for width in config.simclr.proj_hidden_dims:  # Linear(no bias)-BN-ReLU, as jssl's MLPHead
        layers += [nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(True)]
        cin = width
    layers.append(nn.Linear(cin, config.simclr.proj_dim))
    return nn.Sequential(backbone, nn.Sequential(*layers)), source


def torch_dino_net(torch, config):
    nn, F = torch.nn, torch.nn.functional
    backbone, dim, source = torch_vit(torch, config.model.kwargs)
    d = config.dino

    class Head(nn.Module):  # jssl's DINOHead without BN (use_bn=False for the ViT)
        def __init__(self):
            super().__init__()
            layers, cin = [], dim
            for _ in range(d.num_layers - 1):
                layers += [nn.Linear(cin, d.hidden_dim), nn.GELU()]
                cin = d.hidden_dim
            layers.append(nn.Linear(cin, d.bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
            # weight-normalised last layer with its norm fixed to 1 (norm_last_layer)
            self.last = nn.Parameter(torch.empty(d.out_dim, d.bottleneck_dim))
            nn.init.kaiming_uniform_(self.last, a=5**0.5)

        def forward(self, x):
            x = F.normalize(self.mlp(x).float(), dim=-1)
            return x @ F.normalize(self.last, dim=-1).t()

    return nn.Sequential(backbone, Head()), source


def torch_nt_xent(torch, z, temperature: float):
    """NT-Xent on z = [z1; z2] (2N rows), on z's device, in float32."""
    n2 = z.shape[0]
    z = torch.nn.functional.normalize(z.float(), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    n = n2 // 2
    targets = torch.cat([torch.arange(n, n2), torch.arange(n)]).to(z.device)
    return torch.nn.functional.cross_entropy(logits, targets)


def torch_dino_loss(torch, student, teacher, center, n_global, student_temp, teacher_temp):
    """DINO's loss on crop-major logits: student [S*B, K], teacher [T*B, K]."""
    F = torch.nn.functional
    s = (student.float() / student_temp).chunk(student.shape[0] // (teacher.shape[0] // n_global))
    q = F.softmax((teacher.float() - center) / teacher_temp, dim=-1).detach().chunk(n_global)
    total, pairs = 0.0, 0
    for it, qt in enumerate(q):
        for iv, sv in enumerate(s):
            if iv == it:
                continue
            total = total + torch.sum(-qt * F.log_softmax(sv, dim=-1), dim=-1).mean()
            pairs += 1
    return total / pairs


class TorchLars:
    """optax.lars with foreach ops: kernels get weight decay and the trust ratio
    0.001*|p|/|u| (1 if a norm is 0), the rest neither; then heavy-ball momentum."""

    def __init__(self, torch, model, config):
        oc = config.optim
        self.torch, self.wd, self.momentum = torch, oc.weight_decay, oc.momentum
        self.lr = oc.learning_rate * config.batch_size / 256
        self.decay = [p for p in model.parameters() if p.ndim > 1]
        self.plain = [p for p in model.parameters() if p.ndim <= 1]
        self.buf_decay = [torch.zeros_like(p) for p in self.decay]
        self.buf_plain = [torch.zeros_like(p) for p in self.plain]

    def zero_grad(self):
        for p in self.decay + self.plain:
            p.grad = None

    @staticmethod
    def _step(torch, decay, plain, buf_decay, buf_plain, lr, wd, momentum):
        g = [p.grad for p in decay]
        u = torch._foreach_add(g, decay, alpha=wd)
        pn = torch.stack(torch._foreach_norm(decay))
        un = torch.stack(torch._foreach_norm(u))
        ratio = torch.where((pn > 0) & (un > 0), 0.001 * pn / un, torch.ones_like(pn))
        u = [x * r for x, r in zip(u, ratio.unbind(), strict=True)]
        torch._foreach_mul_(buf_decay, momentum)
        torch._foreach_add_(buf_decay, u, alpha=-lr)
        torch._foreach_add_(decay, buf_decay)
        torch._foreach_mul_(buf_plain, momentum)
        torch._foreach_add_(buf_plain, [p.grad for p in plain], alpha=-lr)
        torch._foreach_add_(plain, buf_plain)

    def step(self):
        with self.torch.no_grad():
            self._step(
                self.torch,
                self.decay,
                self.plain,
                self.buf_decay,
                self.buf_plain,
                self.lr,
                self.wd,
                self.momentum,
            )


def torch_workload(torch, name, config, batch, device, compile_model: bool):
    """(step function, parameter count, notes, flop-counting function) of one workload."""
    fmt = torch.channels_last if config.model.name.startswith("resnet") else torch.preserve_format
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    gen = torch.Generator(device="cpu").manual_seed(0)
    notes = {}

    def views(n, size):
        x = torch.rand(n, 3, size, size, generator=gen).to(device)
        return (
            x.contiguous(memory_format=torch.channels_last) if fmt != torch.preserve_format else x
        )

    if config.method == "simclr":
        model, source = torch_simclr_net(torch, config)
        model = model.to(device).to(memory_format=torch.channels_last)
        param_count = sum(p.numel() for p in model.parameters())
        opt = TorchLars(torch, model, config)
        x = views(2 * batch, config.augment.crop_size)
        temperature = config.simclr.temperature
        fwd = torch.compile(model) if compile_model else model

        def loss_of(net):
            with autocast:
                return torch_nt_xent(torch, net(x), temperature)

        def step():
            opt.zero_grad()
            loss = loss_of(fwd)
            loss.backward()
            opt.step()
            return loss

    else:  # dino
        d, oc, a = config.dino, config.optim, config.augment
        student, source = torch_dino_net(torch, config)
        student = student.to(device)
        param_count = sum(p.numel() for p in student.parameters())
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        no_decay = {"0.pos_embed", "0.cls_token"}
        named = list(student.named_parameters())
        groups = [
            {"params": [p for n, p in named if p.ndim > 1 and n not in no_decay]},
            {"params": [p for n, p in named if p.ndim <= 1 or n in no_decay], "weight_decay": 0.0},
        ]
        lr = oc.learning_rate * batch / 256
        fused = device.type == "cuda"
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=oc.weight_decay, fused=fused)
        notes["adamw"] = "fused" if fused else "foreach"
        params = [p for _, p in named]
        t_params = list(teacher.parameters())
        center = torch.zeros(d.out_dim, device=device)
        g = views(a.num_global_crops * batch, a.crop_size)
        loc = views(a.num_local_crops * batch, a.local_crop_size) if a.num_local_crops else None
        s_fwd = torch.compile(student) if compile_model else student
        t_fwd = torch.compile(teacher) if compile_model else teacher
        state = {"center": center}

        def loss_of(s_net, t_net):
            with autocast:
                s = [s_net(g)] + ([s_net(loc)] if loc is not None else [])
                with torch.no_grad():
                    t = t_net(g)
            return torch_dino_loss(
                torch,
                torch.cat(s),
                t,
                state["center"],
                a.num_global_crops,
                d.student_temp,
                d.warmup_teacher_temp,
            ), t

        def step():
            opt.zero_grad(set_to_none=True)
            loss, t = loss_of(s_fwd, t_fwd)
            loss.backward()
            with torch.no_grad():  # DINO's clip_gradients: each tensor to norm <= grad_clip
                grads = [p.grad for p in params]
                norms = torch.stack(torch._foreach_norm(grads))
                scale = torch.clamp(oc.grad_clip / (norms + 1e-6), max=1.0)
                for grad, s in zip(grads, scale.unbind(), strict=True):
                    grad.mul_(s)
                opt.step()
                m = d.teacher_momentum
                torch._foreach_mul_(t_params, m)
                torch._foreach_add_(t_params, params, alpha=1 - m)
                state["center"] = state["center"] * d.center_momentum + (
                    1 - d.center_momentum
                ) * t.float().mean(0)
            return loss

        def loss_of_eager():
            return loss_of(student, teacher)[0]

    def count_flops() -> float:
        """FLOPs of one forward + backward of the loss in eager mode (matmul/conv/attention)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            loss = loss_of(model) if config.method == "simclr" else loss_of_eager()
            loss.backward()
        for p in model.parameters() if config.method == "simclr" else student.parameters():
            p.grad = None
        return float(counter.get_total_flops())

    notes["network"] = source
    return step, param_count, notes, count_flops


def torch_matmul_bf16(torch, device, n: int, repeats: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ a
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        b = a @ a
    sync()
    del b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def torch_part(args, out: dict, save) -> None:
    try:
        import torch
    except ImportError as e:
        out["skipped"] = f"PyTorch is not installed in this Python ({e})"
        return
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        raise RuntimeError("PyTorch sees no CUDA device")
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out.update(
        device=torch.cuda.get_device_name() if cuda else platform.machine(),
        matmul_bf16_flops_per_sec=torch_matmul_bf16(torch, device, 256 if args.dry_run else 8192),
        workloads={},
    )
    warmup, steps = steps_for(args)
    for name in args.workloads:
        config, batch, _ = workload_config(name, args.dry_run)
        is_resnet = config.model.name.startswith("resnet")
        compile_model = not args.dry_run and (
            args.torch_compile == "all" or (args.torch_compile == "resnets" and is_resnet)
        )
        step, param_count, notes, count_flops = torch_workload(
            torch, name, config, batch, device, compile_model
        )
        r = {"batch_size": batch, "param_count": param_count, **notes}
        r["autocast"] = "bfloat16"
        r["memory_format"] = "channels_last" if is_resnet else "contiguous"
        r["torch_compile"] = compile_model
        if args.dry_run:
            full = full_config(name)
            with torch.device("meta"):
                net = (torch_simclr_net if full.method == "simclr" else torch_dino_net)(
                    torch, full
                )[0]
            r["full_size_param_count"] = sum(p.numel() for p in net.parameters())
            net = None
        r["flops_per_step"] = count_flops()
        t0 = time.perf_counter()
        loss = None
        for _ in range(warmup):  # compiles, when torch.compile is on
            loss = step()
        sync()
        r["warmup_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        sec = (time.perf_counter() - t0) / steps
        r["step_seconds"] = sec
        r["images_per_sec"] = batch / sec
        r["flops_per_sec"] = r["flops_per_step"] / sec
        r["utilisation_vs_bf16_matmul"] = r["flops_per_sec"] / out["matmul_bf16_flops_per_sec"]
        r["loss"] = float(loss.detach())
        out["workloads"][name] = r
        save(out)
        print(f"torch  {name}: {r['images_per_sec']:9.1f} images/s", flush=True)
        step = count_flops = loss = None
        if cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- end to end


def tiny_image_folder(root: str) -> str:
    """A 2-class train/test JPEG folder of 16x16 images (for --dry-run without --data)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c in ("a", "b"):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                x = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(x).save(os.path.join(root, split, c, f"{i}.jpg"))
    return root


def e2e_part(args, out: dict, save) -> None:
    import jax

    from benchmarks.budget import scores
    from benchmarks.common import image_folder
    from jssl import data
    from jssl.experiment import Experiment

    path = args.data
    if not path:
        if not args.dry_run:
            raise FileNotFoundError(f"no CIFAR-10 JPEG copy in {DATA_CANDIDATES}; pass --data")
        path = tiny_image_folder(os.path.join(args.out, "tiny_image_folder"))
    t0 = time.perf_counter()
    root = image_folder(path)
    dataset = data.load_dataset("image_folder", path=root)
    out.update(data=path, load_seconds=time.perf_counter() - t0)

    config = load_config("configs/simclr.py:cifar10_folder")
    config.data.path = root
    config.model.dtype = "bfloat16"
    config.eval.untrained = False
    if args.dry_run:
        set_fields(config, TINY_E2E)
    out.update(batch_size=config.batch_size, epochs_of_recipe=config.num_epochs)
    exp = Experiment(config, [jax.devices()[0]], dataset=dataset)
    state = exp.init_state()
    t0 = time.perf_counter()
    state, m = exp.train_step(state, exp.global_batch(0))
    jax.block_until_ready(m)
    out["compile_and_first_step_seconds"] = time.perf_counter() - t0

    budget = args.e2e_seconds
    step, check_every = 1, 10
    t_start = time.perf_counter()
    t_mark, step_mark = None, None  # steady-state clock starts after a few steps
    while True:
        state, m = exp.train_step(state, exp.global_batch(step))
        step += 1
        if args.dry_run and step >= 3:
            break
        if step % check_every == 0:
            jax.block_until_ready(m)
            now = time.perf_counter()
            if t_mark is None and step >= 2 * check_every:
                t_mark, step_mark = now, step
            if now - t_start >= budget:
                break
    jax.block_until_ready(m)
    t_end = time.perf_counter()
    if t_mark is None or step == step_mark:
        t_mark, step_mark = t_start, 1
    out["train_seconds"] = t_end - t_start
    out["steps"] = step
    out["epochs"] = step / exp.steps_per_epoch if exp.steps_per_epoch else float("nan")
    out["images_per_sec"] = (step - step_mark) * config.batch_size / max(t_end - t_mark, 1e-9)
    out["final_loss"] = float(m["loss"])
    recipe_images = config.num_epochs * len(exp.train)
    out["projected_recipe_hours"] = recipe_images / out["images_per_sec"] / 3600
    save(out)

    t0 = time.perf_counter()
    test = dataset.test
    out["knn_top1"] = scores(exp.predict, state, exp.train, test, config, dataset, ("knn",))[
        "knn_top1"
    ]
    out["knn_seconds"] = time.perf_counter() - t0
    print(
        f"e2e    {out['steps']} steps ({out['epochs']:.2f} epochs) in "
        f"{out['train_seconds'] / 60:.1f} min: kNN {out['knn_top1']:.4f}",
        flush=True,
    )


# ----------------------------------------------------------------------------- report


def _f(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "–"


def render(result: dict) -> str:
    meta, parts = result["meta"], result["parts"]
    j, t, e = (parts.get(p, {}) for p in PARTS)
    lines = [
        f"jssl vs PyTorch on {j.get('device') or t.get('device') or '?'} "
        f"({meta['date']}{', DRY RUN on CPU at tiny sizes' if meta['dry_run'] else ''}); "
        f"jax {meta['versions'].get('jax')}, torch {meta['versions'].get('torch')}. "
        f"bf16 matmul: jax {_f(j.get('matmul_bf16_flops_per_sec', 0) / 1e12, '.0f')}, "
        f"torch {_f(t.get('matmul_bf16_flops_per_sec', 0) / 1e12, '.0f')} TFLOP/s.",
        "",
        "| workload | jssl images/s (step with augmentation) | PyTorch images/s (step on fixed "
        "views) | jssl / PyTorch images/s | GFLOP/step jssl (XLA) / PyTorch (FlopCounter) | "
        "of bf16 matmul jssl / PyTorch | augmentation share of jssl step | parameters jssl / "
        "PyTorch | PyTorch network |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["workloads"]:
        js, ts = row.get("jssl") or {}, row.get("torch") or {}
        net = ts.get("network", "–")
        if ts:
            net += ", torch.compile" if ts.get("torch_compile") else ", eager"
        lines.append(
            f"| {row['description']} | {_f(js.get('images_per_sec'), ',.0f')} | "
            f"{_f(ts.get('images_per_sec'), ',.0f')} | {_f(row.get('ratio'), '.2f')} | "
            f"{_f(js.get('flops_per_step', 0) / 1e9, ',.0f')} / "
            f"{_f(ts.get('flops_per_step', 0) / 1e9, ',.0f')} | "
            f"{_f(js.get('utilisation_vs_bf16_matmul'), '.2f')} / "
            f"{_f(ts.get('utilisation_vs_bf16_matmul'), '.2f')} | "
            f"{_f(js.get('augment_share_of_step'), '.2f')} | "
            f"{_f(js.get('param_count'), ',')} / {_f(ts.get('param_count'), ',')} | {net} |"
        )
    if "knn_top1" in e:
        lines += [
            "",
            f"End to end, SimCLR ResNet-18 on the CIFAR-10 JPEG copy (batch {e['batch_size']}, "
            f"bf16, LARS, the {e['epochs_of_recipe']:.0f}-epoch recipe): {e['steps']} steps "
            f"({e['epochs']:.1f} epochs) in {e['train_seconds'] / 60:.1f} min at "
            f"{e['images_per_sec']:,.0f} images/s, kNN top-1 {e['knn_top1']:.4f}; the whole "
            f"{e['epochs_of_recipe']:.0f}-epoch recipe would take "
            f"{e['projected_recipe_hours']:.1f} h at that speed.",
        ]
    for p in PARTS:
        status = parts.get(p, {})
        if "skipped" in status or "error" in status:
            lines += ["", f"{p}: {status.get('skipped') or status.get('error')}"]
    return "\n".join(lines) + "\n"


def merge(args, parts: dict, started: str) -> dict:
    rows = []
    for name in args.workloads:
        js = parts.get("jssl", {}).get("workloads", {}).get(name)
        ts = parts.get("torch", {}).get("workloads", {}).get(name)
        row = {"name": name, "description": WORKLOADS[name][3], "jssl": js, "torch": ts}
        if js and ts:
            row["ratio"] = js["images_per_sec"] / ts["images_per_sec"]
            row["params_match"] = js["param_count"] == ts["param_count"]
            if "full_size_param_count" in js and "full_size_param_count" in ts:
                row["full_size_params_match"] = (
                    js["full_size_param_count"] == ts["full_size_param_count"]
                )
        rows.append(row)
    return {
        "meta": {
            "command": "python benchmarks/gpu_compare.py " + " ".join(args.argv),
            "date": started,
            "dry_run": args.dry_run,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "versions": versions(),
            "torch_compile": args.torch_compile,
        },
        "workloads": rows,
        "parts": parts,
    }


# ----------------------------------------------------------------------------- main


def run_part(args, part: str, timeout: float, extra=()) -> dict:
    """One part in a fresh process; its JSON, or {"error": ...}."""
    path = os.path.join(args.out, f"part_{part}.json")
    if os.path.exists(path):
        os.remove(path)
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, *args.argv, *extra]
    t0 = time.perf_counter()
    try:
        returncode = subprocess.run(cmd, timeout=timeout).returncode
        error = None if returncode == 0 else f"exited {returncode}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    result = {}
    if os.path.exists(path):  # what the part measured before it ended
        with open(path) as f:
            result = json.load(f)
    if error and "error" not in result:
        result["error"] = error
    result["part_seconds"] = time.perf_counter() - t0
    return result


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, help="folder for the JSON and markdown")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, on the CPU, seconds")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of jssl, torch, e2e")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    p.add_argument("--data", default="", help="CIFAR-10 JPEG copy: folder or .tar.gz")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (after compilation)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per workload")
    p.add_argument(
        "--torch-compile",
        default="resnets",
        choices=("all", "resnets", "none"),
        help="torch.compile the networks: all, the ResNets only (default), or none",
    )
    p.add_argument("--e2e-minutes", type=float, default=2.0, help="end-to-end training minutes")
    p.add_argument(
        "--deadline-minutes",
        type=float,
        default=7.5,
        help="the whole command's budget: the end-to-end run is shortened to fit it",
    )
    p.add_argument("--part", default="", choices=("", *PARTS), help=argparse.SUPPRESS)
    p.add_argument("--e2e-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = [a for a in argv]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}; valid: {', '.join(WORKLOADS)}")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if set(parts) - set(PARTS):
        p.error(f"--parts must list some of {', '.join(PARTS)}")
    if not args.data and not args.dry_run:  # a dry run makes a tiny folder instead
        args.data = next((c for c in DATA_CANDIDATES if os.path.exists(c)), "")
    os.makedirs(args.out, exist_ok=True)

    if args.part:  # a child process: one part; its JSON is saved after every workload
        if args.dry_run or args.part == "torch":  # JAX never takes GPU memory beside PyTorch
            os.environ["JAX_PLATFORMS"] = "cpu"
        fn = {"jssl": jssl_part, "torch": torch_part, "e2e": e2e_part}[args.part]
        path = os.path.join(args.out, f"part_{args.part}.json")
        result: dict = {}
        try:
            fn(args, result, lambda r: write_json(path, r))
        except Exception as err:  # recorded, so what was measured stays usable
            traceback.print_exc()
            result["error"] = f"{type(err).__name__}: {err}"
        write_json(path, result)
        return 0 if "error" not in result else 1

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t_start = time.perf_counter()
    results = {}
    timeouts = {"jssl": 300, "torch": 300} if not args.dry_run else {"jssl": 900, "torch": 900}
    for part in parts:
        if part == "e2e":
            left = args.deadline_minutes * 60 - (time.perf_counter() - t_start)
            # data, compilation and kNN (a dry run: a loaded 2-core CPU)
            overhead = 600 if args.dry_run else 100
            seconds = max(30.0, min(args.e2e_minutes * 60, left - overhead))
            print(f"e2e: {seconds / 60:.1f} min of training", flush=True)
            results[part] = run_part(
                args, part, seconds + overhead + 180, ["--e2e-seconds", str(seconds)]
            )
        else:
            results[part] = run_part(args, part, timeouts[part])
        result = merge(args, results, started)
        write_json(os.path.join(args.out, "gpu_compare.json"), result)
        with open(os.path.join(args.out, "gpu_compare.md"), "w") as f:
            f.write(render(result))
    result["meta"]["total_seconds"] = time.perf_counter() - t_start
    write_json(os.path.join(args.out, "gpu_compare.json"), result)
    text = render(result)
    print(text)
    failed = [p for p in parts if "error" in results[p]]
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
