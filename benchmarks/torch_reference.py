"""The plain PyTorch SimCLR that budget.py and compare_pytorch.py measure jssl against.

The same network as jssl's (a ResNet with a 3x3 stride-1 stem, basic blocks,
global average pooling, projection head Linear(no bias)-BN-ReLU-Linear -> 128),
NT-Xent on one forward pass over both views, torchvision transforms in a
``DataLoader`` with workers, weight decay on kernels only, and jssl's LARS
written out in PyTorch.

PyTorch is a benchmark-only dependency (``pip install -e ".[bench]"``): every
function takes the ``torch`` module as an argument or imports it inside, so
this module imports without it.
"""

from __future__ import annotations

import sys

import numpy as np

SCALE = (0.2, 1.0)  # RandomResizedCrop's scale


def import_torch(hint: str):
    """(torch, torchvision), or exit with ``hint`` when PyTorch is not installed.

    DataLoader workers are forked, as usual on Linux; they never touch JAX,
    whose threads sit idle by then, so JAX's warning about fork is silenced.
    """
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f'error: {hint} ({e}); pip install -e ".[bench]"')
    import warnings

    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    return torch, torchvision


def build_torch_model(torch, spec: dict):
    """SimCLR's network: ``model.backbone`` (pooled features) then ``model.head`` (z)."""
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
    import time

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


def torch_optimizer(torch, model, config):
    """A jssl run's optimiser in PyTorch: SGD, or LARS written out as optax.lars does it."""
    oc = config.optim
    groups = torch_param_groups(model, oc.weight_decay)
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


def torch_features(torch, backbone, source, batch_size: int) -> np.ndarray:
    """float32 [N, D]: ``backbone`` (eval mode as it is) on every image of an ImageSource.

    Images are read through ``source.get`` in batches and scaled to [0, 1], as
    the training views are (no normalisation).
    """
    n = len(source)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            images = source.get(np.arange(start, min(start + batch_size, n)))
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
            out.append(backbone(x.float().div(255.0).contiguous()).numpy().astype(np.float32))
    return np.concatenate(out, axis=0)
