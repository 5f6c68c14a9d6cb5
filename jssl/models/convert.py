"""Backbone weights between jssl and PyTorch's layouts, both directions.

Layouts (chosen by the backbone: a jssl ResNet has one, a jssl ViT the other):

- ``"torchvision"``: ``torchvision.models.resnet18/34/50`` state dicts (``conv1``, ``bn1``,
  ``layer1.0.conv1``, ..., ``downsample.0/1``; BatchNorm ``running_mean/var``). Conv kernels are
  [out, in, kh, kw] there and [kh, kw, in, out] in jssl. The CIFAR stem (3x3 ``conv1``) uses
  the same names.
- ``"timm"``: timm's ``VisionTransformer`` and the official DINO ``vision_transformer.py``
  (the layout of DINO, iBOT and MAE checkpoints): ``patch_embed.proj``, ``cls_token``,
  ``pos_embed`` (its grid as stored: the model's ``image_size`` must match it),
  ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; the fused
  ``qkv`` splits into q, k, v in the same order in both. Linear weights are [out, in] there.
  DINOv2's official ViTs (facebookresearch/dinov2 ``vision_transformer.py``) add
  ``blocks.N.ls1.gamma`` / ``ls2.gamma`` (jssl: ``model.kwargs.layer_scale``),
  ``register_tokens`` [1, R, D] (timm: ``reg_token``; jssl: ``num_registers``) and a
  ``mask_token`` of shape [1, D]; their FSDP training checkpoints' chunked
  ``blocks.C.N.`` names read as ``blocks.N.``. Not read: the SwiGLU MLP of ViT-g.

``to_torch`` and ``from_torch`` map every tensor by name from the jssl backbone's own
variables, so a missing, extra or mis-shaped tensor is an error naming it.
``load_backbone`` reads a checkpoint file (``.safetensors`` with numpy, no torch;
``.pth``/``.pth.tar``/``.pt``/``.bin`` with torch when installed, ``weights_only=True``), finds the
backbone among the prefixes SSL checkpoints use (``module.``, ``backbone.``, ``encoder_q.``,
``teacher``/``student`` dicts, ...), drops the classifier and SSL heads, converts, and folds
the input normalisation the weights were trained with into the first layer (jssl models read
RGB in [0, 1]).

Folding is exact for the ViT (its patch embedding has no padding). For a ResNet, the 7x7
stem's zero padding of a normalised image is padding with the mean colour of a [0, 1] one,
so the folded stem differs from the original in its outermost 3 pixels (exact elsewhere).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from flax.traverse_util import flatten_dict, unflatten_dict

from jssl.errors import UserError

LAYOUTS = ("torchvision", "timm")
# Mean and std of RGB in [0, 1] that published weights were trained to see.
INPUT_NORMS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
# "auto": imagenet, except for a file jssl exported (its metadata says it reads [0, 1]).
INPUT_NORM_CHOICES = ("auto", "none", *INPUT_NORMS)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar")  # .pth.tar: MoCo's releases
FILE_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
# Metadata key of the files jssl writes (jssl.export): what the first layer expects.
INPUT_METADATA_KEY = "jssl_input"
INPUT_METADATA = "rgb in [0, 1], no mean/std normalisation"

# A tensor of each layout's first block, to find the backbone's prefix in a checkpoint.
_ANCHORS = {"torchvision": "layer1.0.conv1.weight", "timm": "blocks.0.attn.qkv.weight"}
_KINDS = {"torchvision": "torchvision ResNet", "timm": "timm/DINO ViT"}
# Top-level ViT parameters, named alike in both layouts.
_TOKENS = {
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "mask_token": "mask_token",
    "registers": "register_tokens",
}
# Other names of the same tensors: timm's registers.
_ALIASES = {"reg_token": "register_tokens"}
# Tensors a checkpoint may lack: the masked-image token (MAE, iBOT, DINOv2 students) of a
# ViT built with ``mask_token=True`` then keeps its initial value, zeros.
_OPTIONAL = frozenset({"mask_token"})
# Top-level names of heads in SSL checkpoints, skipped when loading a backbone: classifiers
# (fc, head), SSL projectors and predictors, SwAV prototypes, MAE's decoder, masked-image tokens.
_HEAD_NAMES = frozenset(
    {
        "fc",
        "head",
        "head_dist",
        "classifier",
        "projection_head",
        "projector",
        "predictor",
        "prototypes",
        "masked_embed",
    }
)


class ConversionError(UserError):
    """A checkpoint that does not fit the backbone (or cannot be read)."""


# ----------------------------------------------------------------------------- names


def layout_of(variables: Mapping) -> str:
    """ "torchvision" for a jssl ResNet's variables, "timm" for a ViT's."""
    params = variables.get("params", {})
    if "stem_conv" in params:
        return "torchvision"
    if "patch_embed" in params:
        return "timm"
    raise ConversionError(
        f"jssl knows no PyTorch layout for a backbone with parameters {sorted(params)}; "
        "ResNets (torchvision layout) and ViTs (timm layout) have one."
    )


_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("params", "gamma"): "gamma",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_VIT_LAYERS = {
    ("ln1",): "norm1",
    ("ln2",): "norm2",
    ("attn", "qkv"): "attn.qkv",
    ("attn", "proj"): "attn.proj",
    ("mlp_fc1",): "mlp.fc1",
    ("mlp_fc2",): "mlp.fc2",
    ("ls1",): "ls1",
    ("ls2",): "ls2",
}


def _resnet_module(path: tuple[str, ...]) -> str | None:
    if path == ("stem_conv",):
        return "conv1"
    if path == ("stem_bn",):
        return "bn1"
    block = re.fullmatch(r"stage(\d+)_block(\d+)", path[0]) if len(path) == 2 else None
    if block is None:
        return None
    layer = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(path[1])
    auto = re.fullmatch(r"(Conv|BatchNorm)_(\d+)", path[1])
    if layer is None and auto is not None:  # the n-th unnamed conv / BatchNorm of the block
        layer = f"{'conv' if auto[1] == 'Conv' else 'bn'}{int(auto[2]) + 1}"
    return None if layer is None else f"layer{block[1]}.{int(block[2]) - 1}.{layer}"


def _vit_module(path: tuple[str, ...]) -> str | None:
    if path == ("patch_embed",):
        return "patch_embed.proj"
    if path == ("norm",):
        return "norm"
    block = re.fullmatch(r"block(\d+)", path[0]) if path else None
    layer = _VIT_LAYERS.get(path[1:])
    return None if block is None or layer is None else f"blocks.{int(block[1]) - 1}.{layer}"


def torch_names(variables: Mapping) -> dict[tuple[str, ...], str]:
    """(collection, *path) of every jssl backbone variable -> its name in the PyTorch layout."""
    layout = layout_of(variables)
    module_of = _resnet_module if layout == "torchvision" else _vit_module
    names = {}
    for key in flatten_dict(dict(variables)):
        collection, *path, leaf = key
        if not path and leaf in _TOKENS:
            names[key] = _TOKENS[leaf]
            continue
        module = module_of(tuple(path))
        suffix = _LEAVES.get((collection, leaf))
        if module is None or suffix is None:
            raise ConversionError(
                f"the jssl parameter {'/'.join(key)} has no {layout} name; jssl.models.convert "
                "knows jssl's ResNet and ViT backbones (see its docstring)"
            )
        names[key] = f"{module}.{suffix}"
    return names


def _to_torch_array(a: np.ndarray, leaf: str) -> np.ndarray:
    if a.ndim == 4:  # conv [kh, kw, in, out] -> [out, in, kh, kw]
        return a.transpose(3, 2, 0, 1)
    if a.ndim == 2 and leaf == "kernel":  # dense [in, out] -> [out, in]
        return a.T
    return a


def _from_torch_array(a: np.ndarray, leaf: str) -> np.ndarray:
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if a.ndim == 2 and leaf == "kernel":
        return a.T
    return a


def _torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2 and leaf == "kernel":
        return (shape[1], shape[0])
    return tuple(shape)


# ----------------------------------------------------------------------------- both directions


def to_torch(variables: Mapping) -> dict[str, np.ndarray]:
    """A jssl backbone's ``{"params", "batch_stats"}`` as a PyTorch-layout state dict.

    float32 C-contiguous arrays; BatchNorm layers also get ``num_batches_tracked`` (0), so
    ``load_state_dict`` of torchvision's ResNet (with ``fc = nn.Identity()``) or of timm's
    ViT (``num_classes=0``) takes it as is.
    """
    flat = flatten_dict(dict(variables))
    out = {}
    for key, name in torch_names(variables).items():
        a = np.asarray(flat[key], np.float32)
        out[name] = np.ascontiguousarray(_to_torch_array(a, key[-1]))
        if key[0] == "batch_stats" and key[-1] == "mean":
            out[name[: -len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return out


def _skipped(name: str) -> bool:
    first = name.split(".", 1)[0]
    return (
        name.endswith("num_batches_tracked") or first in _HEAD_NAMES or first.startswith("decoder")
    )


def from_torch(
    state_dict: Mapping[str, np.ndarray], target: Mapping, *, source: str = "the checkpoint"
) -> dict:
    """``state_dict`` (PyTorch layout, without prefix) as jssl variables shaped like ``target``.

    ``target``: the backbone's ``{"params", "batch_stats"}`` (arrays or ShapeDtypeStructs),
    which gives the names and shapes. Heads (``fc``, ``head``, projectors, ...) and
    ``num_batches_tracked`` are skipped; any other tensor without a place, a missing tensor
    and a tensor of another shape raise ConversionError naming it. Returns float32 numpy.
    """
    names = torch_names(target)
    flat_target = flatten_dict(dict(target))
    state_dict = {_ALIASES.get(k, k): v for k, v in state_dict.items()}
    expected = set(names.values())
    missing = [n for n in names.values() if n not in state_dict and n not in _OPTIONAL]
    extra = sorted(
        k for k in state_dict if k not in expected and not (_skipped(k) or k in _OPTIONAL)
    )
    if missing or extra:
        shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
        what = (
            f"has no tensor {missing[0]!r}{_more(missing)} that the model needs"
            if missing
            else f"has tensor {extra[0]!r}{_more(extra)} that the model has no place for"
        )
        raise ConversionError(f"{source} {what}; {_compare(shapes, target)}")
    out = {}
    for key, name in names.items():
        want = _torch_shape(tuple(flat_target[key].shape), key[-1])
        if name not in state_dict:  # optional
            out[key] = np.zeros(flat_target[key].shape, np.float32)
            continue
        a = np.asarray(state_dict[name])
        if name == "mask_token" and a.size == np.prod(want):  # DINOv2's is [1, D]
            a = a.reshape(want)
        if a.shape != want:
            shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
            raise ConversionError(
                f"{source}: tensor {name!r} has shape {a.shape}, the model needs {want}; "
                f"{_compare(shapes, target)}"
            )
        out[key] = np.asarray(_from_torch_array(a, key[-1]), np.float32)
    return unflatten_dict(out)


def _more(items: list) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


# ----------------------------------------------------------------------------- descriptions


def describe(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """What a PyTorch-layout state dict holds, from its names and shapes (for error messages)."""
    if any(k.startswith("blocks.") for k in shapes):
        depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
        text = f"a ViT with {depth} blocks"
        width = shapes.get("cls_token", (0,))[-1]
        if width:
            name = {192: "vit_tiny", 384: "vit_small", 768: "vit_base"}.get(width)
            text += f", width {width}" + (f" ({name})" if name else "")
        patch = shapes.get("patch_embed.proj.weight")
        tokens = shapes.get("pos_embed")
        if patch and len(patch) == 4:
            text += f", patch {patch[-1]}"
            if tokens and len(tokens) == 3:
                grid = int(round((tokens[1] - 1) ** 0.5))
                text += f", a {grid}x{grid} position grid (image_size {grid * patch[-1]})"
        return text
    stages: dict[int, int] = {}
    for k in shapes:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            stages[int(m[1])] = max(stages.get(int(m[1]), 0), int(m[2]) + 1)
    if not stages:
        return f"{len(shapes)} tensors of no known backbone"
    sizes = tuple(stages[i] for i in sorted(stages))
    block = "bottleneck" if any(k.endswith(".conv3.weight") for k in shapes) else "basic"
    text = f"a ResNet with blocks {sizes}, {block} blocks"
    stem = shapes.get("conv1.weight")
    if stem and len(stem) == 4:
        kind = "imagenet" if stem[-1] == 7 else "cifar" if stem[-1] == 3 else "unknown"
        text += f", a {stem[-1]}x{stem[-1]} stem ({kind}), width {stem[0]}"
    return text


def _compare(shapes: Mapping[str, tuple[int, ...]], target: Mapping) -> str:
    flat = flatten_dict(dict(target))
    model = {n: _torch_shape(tuple(flat[k].shape), k[-1]) for k, n in torch_names(target).items()}
    return (
        f"the file holds {describe(shapes)}, the model is {describe(model)}; choose the model "
        "that matches (--config.model.name, --config.model.kwargs.*)"
    )


# ----------------------------------------------------------------------------- files


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a checkpoint file by its dotted name (nested dicts joined with "."),
    and the file's metadata (safetensors only).

    ``.safetensors``: read with numpy, no torch. ``.pth``/``.pt``/``.bin``: PyTorch pickles,
    read only when torch is installed and only with ``torch.load(weights_only=True)`` (which
    refuses arbitrary Python objects; ``argparse.Namespace``, the training arguments of
    DINO's and MoCo's checkpoints, is allowed). float16/bfloat16 become float32.
    """
    lower = path.lower()
    if not os.path.isfile(path):
        raise ConversionError(
            f"weights file {path} does not exist (or is not a file); give a "
            f"{' or '.join(FILE_SUFFIXES)} file"
        )
    if lower.endswith(".safetensors"):
        return _read_safetensors(path), _safetensors_metadata(path)
    if lower.endswith(TORCH_SUFFIXES):
        return _read_torch(path), {}
    suffix = os.path.splitext(path)[1] or "(none)"
    raise ConversionError(
        f"weights file {path}: unknown file type {suffix!r}; give a .safetensors file "
        "(read without torch) or a .pth/.pt PyTorch file (read with torch, when installed)"
    )


def _safetensors_metadata(path: str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return dict(f.metadata() or {})


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as f:
            names = list(f.keys())
            bf16 = [k for k in names if f.get_slice(k).get_dtype() == "BF16"]
            out = {k: f.get_tensor(k) for k in names if k not in bf16}
        if bf16:  # numpy has no bfloat16: read those as JAX arrays
            with safe_open(path, framework="flax") as f:
                out.update({k: np.asarray(f.get_tensor(k), np.float32) for k in bf16})
    except (SafetensorError, OSError, ValueError) as e:
        raise ConversionError(
            f"cannot read {path} as a safetensors file ({type(e).__name__}: {e}); give a file "
            "written by safetensors' save_file"
        ) from None
    return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in out.items()}


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"{path} is a PyTorch pickle: reading it needs torch, which jssl does not install "
            "(pip install torch), or convert it to .safetensors where torch is installed: "
            "safetensors.torch.save_file(state_dict, 'weights.safetensors')"
        ) from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL (\S+)", str(e))
        what = f" ({refused[1]})" if refused else ""
        raise ConversionError(
            f"{path} holds Python objects besides tensors{what}, which jssl does not unpickle "
            "(torch.load with weights_only=True); if you trust the file, load it in PyTorch and "
            "save its state dict with safetensors.torch.save_file, then give that file"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConversionError(
            f"cannot read {path} with torch.load ({type(e).__name__}: {first}); give a "
            "PyTorch checkpoint (.pth/.pt) or a .safetensors file"
        ) from None
    out: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, argparse.Namespace):
            return  # training arguments
        elif torch.is_tensor(node):
            t = node.detach().cpu()
            out[prefix[:-1]] = (t.float() if t.is_floating_point() else t).numpy()

    walk(obj, "")
    return out


# ----------------------------------------------------------------------------- loading


def backbone_prefixes(flat: Mapping[str, Any], layout: str) -> list[str]:
    """The prefixes under which ``flat`` holds a backbone of ``layout`` ("" for a plain state
    dict), e.g. ["student.module.backbone.", "teacher.backbone."] for a DINO checkpoint."""
    anchor = _ANCHORS[layout]
    return sorted(k[: -len(anchor)] for k in flat if k == anchor or k.endswith("." + anchor))


def select_backbone(
    flat: Mapping[str, np.ndarray], layout: str, *, prefix: str = "", source: str = "the file"
) -> tuple[dict[str, np.ndarray], str]:
    """(the backbone's tensors with its prefix removed, that prefix).

    ``prefix`` picks one of the backbones found by a part of its prefix that starts at a
    name boundary ("teacher", "module.encoder_q"); "" is fine when there is one.
    """
    found = backbone_prefixes(flat, layout)
    chosen = [p for p in found if not prefix or f".{prefix}" in f".{p}"]
    if len(chosen) == 1:
        p = chosen[0]
        return {k[len(p) :]: v for k, v in flat.items() if k.startswith(p)}, p
    shown = ", ".join(repr(p) for p in chosen or found)
    if len(chosen) > 1:
        raise ConversionError(
            f"{source} holds {len(chosen)} {_KINDS[layout]} backbones, under {shown}; choose "
            f"one with --config.init_from.prefix (e.g. {chosen[-1].split('.')[0]!r})"
        )
    if found:
        raise ConversionError(
            f"{source} has no {_KINDS[layout]} backbone under a prefix with {prefix!r}; its "
            f"backbones are under {shown}: set --config.init_from.prefix to a part of one"
        )
    top = sorted({k.split(".", 1)[0] for k in flat})
    listed = ", ".join(repr(t) for t in top[:12]) + (
        f" and {len(top) - 12} more" if len(top) > 12 else ""
    )
    others = [lay for lay in LAYOUTS if lay != layout and backbone_prefixes(flat, lay)]
    hint = f"; it holds a {_KINDS[others[0]]}, not a {_KINDS[layout]}" if others else ""
    raise ConversionError(
        f"{source} holds no {_KINDS[layout]} weights (no tensor named '[...]{_ANCHORS[layout]}'); "
        f"its top-level names: {listed or 'none'} ({len(flat)} tensors){hint}; give a file "
        f"with a {layout}-layout state dict, or pick a model of the file's kind"
    )


def fold_input_norm(variables: Mapping, mean, std) -> dict:
    """Backbone variables for RGB in [0, 1] from variables for ``(x - mean) / std`` inputs.

    The first layer's kernel is divided by std per input channel, and the constant
    ``sum(kernel * mean / std)`` goes to the ViT's patch-embedding bias, or to the ResNet's
    stem BatchNorm running mean (which the stem's bias-free conv feeds).
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    params = {k: dict(v) if isinstance(v, Mapping) else v for k, v in variables["params"].items()}
    stats = {k: dict(v) for k, v in variables.get("batch_stats", {}).items()}
    first = "patch_embed" if layout_of(variables) == "timm" else "stem_conv"
    kernel = np.asarray(params[first]["kernel"], np.float32)  # [kh, kw, C, D]
    if kernel.shape[2] != mean.shape[0]:
        raise ConversionError(
            f"input normalisation of {mean.shape[0]} channels for a model with "
            f"{kernel.shape[2]} input channels; set --config.init_from.input_norm=none"
        )
    shift = np.einsum("hwcd,c->d", kernel, mean / std)
    params[first]["kernel"] = kernel / std[:, None]
    if first == "patch_embed":
        params[first]["bias"] = np.asarray(params[first]["bias"], np.float32) - shift
    else:
        stats["stem_bn"]["mean"] = np.asarray(stats["stem_bn"]["mean"], np.float32) + shift
    return {"params": params, "batch_stats": stats}


_CHUNKED = re.compile(r"(^|\.)blocks\.\d+\.(\d+)\.")


def unchunk_blocks(flat: Mapping[str, Any]) -> dict[str, Any]:
    """DINOv2's FSDP checkpoints' ``blocks.C.N.`` (block N in chunk C) as ``blocks.N.``."""
    return {_CHUNKED.sub(r"\1blocks.\2.", k): v for k, v in flat.items()}


def load_backbone(
    path: str, target: Mapping, *, prefix: str = "", input_norm: str = "auto"
) -> dict:
    """The backbone in checkpoint ``path`` as jssl variables shaped like ``target``.

    Args:
      path: a .safetensors (no torch needed) or .pth/.pt file in the torchvision (ResNet) or
        timm/DINO (ViT) layout, possibly inside an SSL checkpoint (prefixes and dicts such as
        ``module.``, ``backbone.``, ``teacher``).
      target: the jssl backbone's ``{"params", "batch_stats"}`` (gives names and shapes).
      prefix: picks the backbone when the file holds several (see ``select_backbone``).
      input_norm: the normalisation the weights expect, folded into the first layer
        (``INPUT_NORM_CHOICES``): "auto" is "imagenet" except for files jssl exported.

    Returns float32 numpy ``{"params", "batch_stats"}``.
    """
    if input_norm not in INPUT_NORM_CHOICES:
        raise ConversionError(
            f"input_norm={input_norm!r}: use one of {', '.join(INPUT_NORM_CHOICES)}"
        )
    flat, metadata = read_checkpoint(path)
    flat = unchunk_blocks(flat)
    layout = layout_of(target)
    state_dict, found_prefix = select_backbone(flat, layout, prefix=prefix, source=path)
    variables = from_torch(state_dict, target, source=f"{path} (prefix {found_prefix!r})")
    if input_norm == "auto":
        input_norm = "none" if INPUT_METADATA_KEY in metadata else "imagenet"
    if input_norm != "none":
        variables = fold_input_norm(variables, *INPUT_NORMS[input_norm])
    skipped = sorted({k.split(".", 1)[0] for k in state_dict if _skipped(k)} - {""})
    logging.info(
        "Loaded the %s backbone of %s (prefix %r, skipped %s, input normalisation %s)",
        layout,
        path,
        found_prefix,
        skipped or "nothing",
        input_norm,
    )
    return variables
