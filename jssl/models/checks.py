"""A backbone's ``config.model.kwargs`` checked against the model it builds.

``jssl.validation`` calls ``model_problems`` with the fields that passed their own
checks; ``vit_patch`` tells the method checks (``Method.check``) a ViT's patch size.
"""

from __future__ import annotations

import dataclasses
import functools

from jssl.checks import (
    MISSING,
    SIZE,
    WIDTH,
    Check,
    boolean,
    get,
    integer,
    is_int,
    numbers,
    one_of,
    problem_text,
    real,
)
from jssl.models.conv import CONV_IMPLS


def _model_class(name: str):
    from jssl.models import MODELS

    factory = MODELS[name]
    cls = factory.func if isinstance(factory, functools.partial) else factory
    return cls, dict(getattr(factory, "keywords", {}))


# keyword argument -> check, for the backbones' attributes (unknown ones are errors too)
MODEL_KWARGS: dict[str, Check] = {
    "widths": numbers(WIDTH, min_length=1),
    "convs_per_stage": integer(1, 64),
    "stage_sizes": numbers(integer(1, 64), min_length=1),
    "block": one_of(("basic", "bottleneck"), "ResNet block"),
    "width": WIDTH,
    "stem": one_of(("cifar", "imagenet"), "ResNet stem"),
    "zero_init_residual": boolean,
    "conv_impl": one_of(tuple(CONV_IMPLS), "conv_impl"),
    "patch_size": SIZE,
    "hidden": WIDTH,
    "depth": integer(1, 256),
    "num_heads": integer(1, 1024),
    "mlp_dim": WIDTH,
    "image_size": SIZE,
    "return_attention": boolean,
    "pos_embedding": one_of(("learned", "sincos"), "ViT pos_embedding"),
    "mask_token": boolean,
    "num_registers": integer(0, 1024),
    "layer_scale": real(0.0, 1e3),
}


def model_problems(config, ok: dict, prefix: str, crops=()) -> list[str]:
    """Problems of ``config.model.kwargs`` for ``ok["model.name"]``: unknown arguments,
    each argument's check (``MODEL_KWARGS``), a ViT's width, heads and patch against its
    image and the ``crops`` ((field, size) pairs) it will see."""
    name = ok.get("model.name")
    kwargs = get(config, "model.kwargs")
    if kwargs is MISSING or not hasattr(kwargs, "keys"):
        return []  # reported with the trainer's fields
    if name is None:
        return []
    cls, defaults = _model_class(name)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name", "dtype")]
    out = []
    unknown = sorted(k for k in kwargs.keys() if k not in fields)
    if unknown:
        out.append(
            f"{prefix}model.name={name!r} takes no argument {', '.join(unknown)} (model.kwargs "
            f"has {', '.join(sorted(kwargs.keys()))}; {name} takes {', '.join(fields)}): use a "
            "config file whose preset builds this model, or a model of the same family"
        )
    values = {**defaults, **{k: kwargs[k] for k in kwargs.keys() if k in fields}}
    good = {}
    for key, value in values.items():
        if key not in kwargs.keys():
            good[key] = value
            continue
        checker = MODEL_KWARGS.get(key)
        problem = checker(value) if checker is not None else None
        if problem is None:
            good[key] = value
        else:
            out.append(problem_text(f"{prefix}model.kwargs.{key}", value, problem))
    if cls.__name__ == "ViT":
        out += _vit_problems(config, good, prefix, cls, crops)
    return out


def _vit_problems(config, kw: dict, prefix: str, cls, crops) -> list[str]:
    def attr(key):  # None for an argument given a bad value (reported already)
        if key in kw:
            return kw[key]
        given = get(config, f"model.kwargs.{key}")
        return getattr(cls, key, None) if given is MISSING else None

    out = []
    hidden, heads, patch, size = (
        attr("hidden"),
        attr("num_heads"),
        attr("patch_size"),
        attr("image_size"),
    )
    if is_int(hidden) and is_int(heads) and hidden % heads:
        out.append(
            f"{prefix}model.kwargs.num_heads={heads}: the ViT width hidden={hidden} is not "
            f"divisible by it; use a divisor of {hidden}"
        )
    if attr("pos_embedding") == "sincos" and is_int(hidden) and hidden % 4:
        out.append(
            f"{prefix}model.kwargs.hidden={hidden}: sine-cosine position embeddings "
            "(pos_embedding='sincos') need a width divisible by 4; use a multiple of 4"
        )
    if not is_int(patch):
        return out
    if is_int(size) and size < patch:
        out.append(
            f"{prefix}model.kwargs.image_size={size}: smaller than patch_size={patch}; use at "
            f"least {patch}"
        )
    for field, crop in crops:
        if is_int(crop) and 1 <= crop < patch:
            out.append(
                f"{prefix}{field}={crop}: smaller than the ViT's patch_size={patch}; use a crop "
                f"of at least {patch} px or a smaller --config.model.kwargs.patch_size"
            )
    return out


def vit_patch(config, ok: dict) -> tuple[bool, int | None]:
    """(whether model.name is a ViT, its patch size when valid)."""
    name = ok.get("model.name")
    if name is None:
        return False, None
    cls, defaults = _model_class(name)
    if cls.__name__ != "ViT":
        return False, None
    patch = get(config, "model.kwargs.patch_size")
    if patch is MISSING:
        patch = defaults.get("patch_size", cls.patch_size)
    return True, (patch if is_int(patch) and patch >= 1 else None)
