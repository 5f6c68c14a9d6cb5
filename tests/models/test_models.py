"""Tests for jssl.models: shapes, dtypes, BatchNorm modes, ViT position interpolation,
registry, weight-decay mask and parameter counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jssl.models import (
    MODELS,
    ConvNet,
    MLPHead,
    ResNet,
    ViT,
    count_params,
    create_model,
    interpolate_pos_embed,
    weight_decay_mask,
)


# Everything runs under jit: eager Flax compiles each op separately, which is far
# slower on CPU than compiling one program.
def _init(model, x, **kwargs):
    return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False, **kwargs))(x)


def _apply(model, variables, x, **kwargs):
    return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


def _abstract_init(model, shape):
    return jax.eval_shape(lambda: _init(model, jnp.zeros(shape, jnp.float32)))


def _all_dtypes(tree):
    return {x.dtype for x in jax.tree_util.tree_leaves(tree)}


# Shapes only (traced, not computed) for the large models: keeps the suite fast on CPU;
# test_resnet18_forward_train computes one of them for real.
@pytest.mark.parametrize(
    "name,stem,dim,grid",
    [
        ("resnet18", "cifar", 512, 4),
        ("resnet18", "imagenet", 512, 1),
        ("resnet34", "cifar", 512, 4),
        ("resnet34", "imagenet", 512, 1),
        ("resnet50", "cifar", 2048, 4),
        ("resnet50", "imagenet", 2048, 1),
    ],
)
def test_resnet_output_shapes(name, stem, dim, grid):
    model = create_model(name, stem=stem)
    assert model.feature_dim == dim
    x = jnp.zeros((2, 32, 32, 3))
    variables = _abstract_init(model, x.shape)
    features, aux = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert features.shape == (2, dim) and features.dtype == jnp.float32
    assert aux["feature_map"].shape == (2, grid, grid, dim)


def test_resnet18_forward_train():
    model = create_model("resnet18")
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = _init(model, x)
    (features, aux), updates = _apply(model, variables, x, train=True, mutable=["batch_stats"])
    assert features.shape == (2, 512) and aux["feature_map"].shape == (2, 4, 4, 512)
    assert np.isfinite(np.asarray(features)).all()
    assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(
        variables["batch_stats"]
    )


def test_resnet_zero_init_residual():
    model = ResNet(stage_sizes=(1,), width=8, zero_init_residual=True)
    params = _init(model, jnp.zeros((1, 8, 8, 3)))["params"]
    last_bn = params["stage1_block1"]["BatchNorm_1"]["scale"]
    np.testing.assert_array_equal(last_bn, 0.0)
    np.testing.assert_array_equal(params["stage1_block1"]["BatchNorm_0"]["scale"], 1.0)


@pytest.mark.parametrize("shape,grid", [((4, 8, 8, 1), 2), ((4, 16, 16, 1), 4)])
def test_convnet_small_digits(shape, grid):
    model = ConvNet()
    x = jax.random.uniform(jax.random.key(0), shape)
    variables = _init(model, x)
    features, aux = _apply(model, variables, x, train=False)
    assert features.shape == (4, 128) and features.dtype == jnp.float32
    assert aux["feature_map"].shape == (4, grid, grid, 128)
    assert model.feature_dim == 128


def test_batchnorm_stats_update_in_train_and_unused_in_eval():
    model = ConvNet(widths=(8, 16))
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1)) * 3.0 + 1.0
    variables = _init(model, x)
    _, updates = _apply(model, variables, x, train=True, mutable=["batch_stats"])
    old = jax.tree_util.tree_leaves(variables["batch_stats"])
    new = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))

    # Eval mode: running averages are used, so an example's output ignores the rest
    # of the batch and the stats are not updated.
    full, _ = _apply(model, variables, x, train=False)
    alone, _ = _apply(model, variables, x[:1], train=False)
    np.testing.assert_allclose(full[:1], alone, rtol=1e-5, atol=1e-6)
    _, eval_updates = _apply(model, variables, x, train=False, mutable=["batch_stats"])
    jax.tree.map(
        np.testing.assert_array_equal, eval_updates["batch_stats"], variables["batch_stats"]
    )
    # ...while train mode normalises with batch statistics, so the batch matters.
    train_full, _ = _apply(model, variables, x, train=True, mutable=["batch_stats"])
    train_alone, _ = _apply(model, variables, x[:2], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_full[0][:2], train_alone[0], atol=1e-4)


def test_vit_interpolates_position_embeddings_and_returns_attention():
    model = create_model("vit_tiny", patch_size=4, image_size=32, depth=2)
    x32 = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = _init(model, x32)
    assert variables["params"]["pos_embed"].shape == (1, 1 + 64, 192)

    features, aux = _apply(model, variables, x32, train=False)
    assert features.shape == (2, 192) and features.dtype == jnp.float32
    assert aux["feature_map"].shape == (2, 8, 8, 192)
    np.testing.assert_array_equal(aux["cls"], features)
    assert "attention" not in aux

    x16 = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    features, aux = jax.jit(lambda v, x: model.apply(v, x, train=False, return_attention=True))(
        variables, x16
    )
    assert features.shape == (2, 192)
    assert aux["feature_map"].shape == (2, 4, 4, 192)
    assert aux["attention"].shape == (2, 3, 17, 17)
    np.testing.assert_allclose(aux["attention"].sum(-1), 1.0, rtol=1e-5)
    assert np.isfinite(np.asarray(features)).all()


def test_vit_return_attention_attribute():
    model = ViT(
        patch_size=4,
        hidden=32,
        depth=1,
        num_heads=2,
        mlp_dim=64,
        image_size=16,
        return_attention=True,
    )
    x = jnp.ones((1, 16, 16, 3))
    _, aux = _apply(model, _init(model, x), x, train=False)
    assert aux["attention"].shape == (1, 2, 17, 17)


def test_interpolate_pos_embed():
    pe = jax.random.normal(jax.random.key(0), (1, 16, 8))
    assert interpolate_pos_embed(pe, (4, 4)) is pe
    assert interpolate_pos_embed(pe, (2, 6)).shape == (1, 12, 8)
    # A constant embedding stays constant under interpolation.
    const = jnp.ones((1, 16, 8))
    np.testing.assert_allclose(interpolate_pos_embed(const, (6, 6)), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "model,shape",
    [
        (ResNet(stage_sizes=(1, 1), width=8, dtype=jnp.bfloat16), (2, 8, 8, 3)),
        (
            ViT(
                patch_size=4,
                hidden=32,
                depth=1,
                num_heads=2,
                mlp_dim=64,
                image_size=16,
                dtype=jnp.bfloat16,
            ),
            (2, 16, 16, 3),
        ),
    ],
)
def test_bfloat16_compute_keeps_float32_params_and_outputs(model, shape):
    x = jax.random.normal(jax.random.key(0), shape)
    variables = _init(model, x)
    assert _all_dtypes(variables) == {jnp.dtype(jnp.float32)}
    (features, aux), _ = _apply(
        model,
        variables,
        x,
        train=True,
        mutable=["batch_stats"],
        **({"return_attention": True} if isinstance(model, ViT) else {}),
    )
    assert features.dtype == jnp.float32
    assert _all_dtypes(aux) == {jnp.dtype(jnp.float32)}
    assert np.isfinite(np.asarray(features)).all()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("use_bn,activation", [(True, "relu"), (False, "gelu")])
def test_mlp_head(dtype, use_bn, activation):
    head = MLPHead((16, 16), 8, use_bn=use_bn, activation=activation, dtype=dtype)
    x = jax.random.normal(jax.random.key(0), (4, 12))
    variables = _init(head, x)
    assert _all_dtypes(variables) == {jnp.dtype(jnp.float32)}
    assert ("batch_stats" in variables) == use_bn
    out, _ = _apply(head, variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (4, 8) and out.dtype == jnp.float32


def test_mlp_head_unknown_activation():
    head = MLPHead((4,), 2, activation="swishy")
    with pytest.raises(ValueError, match="gelu"):
        _init(head, jnp.zeros((2, 3)))


def test_create_model_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("resnet1000")
    for name in ("resnet18", "resnet50", "convnet", "vit_small"):
        assert name in str(err.value)
    assert set(MODELS) == {
        "resnet18",
        "resnet34",
        "resnet50",
        "convnet",
        "vit_tiny",
        "vit_small",
        "vit_base",
    }


def test_weight_decay_mask():
    resnet = ResNet(stage_sizes=(1, 1), width=8, block="bottleneck")
    mask = weight_decay_mask(_abstract_init(resnet, (1, 16, 16, 3))["params"])
    block = mask["stage2_block1"]
    assert block["Conv_0"]["kernel"] and block["proj_conv"]["kernel"]
    assert not block["BatchNorm_0"]["scale"] and not block["BatchNorm_0"]["bias"]

    vit = ViT(patch_size=4, hidden=32, depth=1, num_heads=2, mlp_dim=64, image_size=16)
    mask = weight_decay_mask(_abstract_init(vit, (1, 16, 16, 3))["params"])
    assert mask["patch_embed"]["kernel"] and not mask["patch_embed"]["bias"]
    assert not mask["pos_embed"] and not mask["cls_token"]
    attn = mask["block1"]["attn"]
    assert attn["qkv"]["kernel"] and not attn["qkv"]["bias"]
    assert not mask["block1"]["ln1"]["scale"] and not mask["norm"]["bias"]

    head = MLPHead((8,), 4)
    mask = weight_decay_mask(_abstract_init(head, (2, 8))["params"])
    assert mask["Dense_1"]["kernel"] and not mask["Dense_1"]["bias"]


# Published counts without the classifier: torchvision resnet18 11,689,512 - 513,000,
# resnet50 25,557,032 - 2,049,000; timm vit_small_patch16_224 22,050,664 - 385,000.
@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("resnet18", {"stem": "imagenet"}, 11_176_512),
        ("resnet50", {"stem": "imagenet"}, 23_508_032),
        ("vit_small", {}, 21_665_664),
    ],
)
def test_param_counts(name, kwargs, expected):
    variables = _abstract_init(create_model(name, **kwargs), (1, 224, 224, 3))
    assert abs(count_params(variables["params"]) - expected) <= 0.01 * expected


def test_sharded_batch_matches_single_device():
    """BatchNorm statistics are global when the batch is sharded over the mesh."""
    model = ConvNet(widths=(8, 16))
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    variables = _init(model, x)
    fn = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    (ref, _), ref_stats = fn(variables, x)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    (out, _), stats = fn(variables, xs)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), stats, ref_stats
    )


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [
        (3, 1, ((1, 1), (1, 1))),
        (3, 2, ((1, 1), (1, 1))),
        (7, 2, ((3, 3), (3, 3))),
        (1, 2, ((0, 0), (0, 0))),
        (3, 2, "SAME"),
        (3, 1, "VALID"),
        (2, 1, ((0, 1), (1, 0))),
    ],
)
@pytest.mark.parametrize("impl", ["im2col", "chunked_grad"])
def test_conv_impls_equal_lax_conv_values_and_gradients(kernel, stride, padding, impl, monkeypatch):
    from jax import lax

    from jssl.models import conv as conv_module

    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1000)  # 4 chunks of one image each
    conv = conv_module.conv_fn(impl, stride=2)
    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(4, 9, 10, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def loss(fn):
        def f(x, w):
            y = fn(x, w, (stride, stride), padding, dimension_numbers=dn, precision="highest")
            return jnp.sum(jnp.sin(y)), y

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(x, w)

    (_, y_ref), g_ref = loss(lax.conv_general_dilated)
    (_, y), g = loss(conv)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def _preset_convs(monkeypatch) -> list[tuple]:
    """(input shape, kernel shape, strides, padding) of every distinct convolution of the
    ResNet presets (CIFAR and STL-10 ResNet-18, ImageNet ResNet-50, the cpu modifier's), at
    batch 2, recorded by tracing each network's init."""
    from jax import lax

    from benchmarks.throughput import load_config
    from jssl.models import conv as conv_module

    seen = {}

    def record(lhs, rhs, window_strides, padding, **kwargs):
        pads = conv_module._explicit(padding, lhs.shape, rhs.shape, window_strides)
        seen[(lhs.shape, rhs.shape, tuple(window_strides), pads)] = None
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)

    monkeypatch.setattr(conv_module, "chunked_grad_conv", record)
    for name in ("cifar10_folder", "cifar10_folder,cpu", "stl10", "imagenet"):
        c = load_config(f"configs/simclr.py:{name}")
        kwargs = dict(c.model.kwargs, conv_impl="chunked_grad")
        model = create_model(c.model.name, **kwargs)
        side = c.augment.crop_size
        _abstract_init(model, (2, side, side, 3))
    return list(seen)


@pytest.mark.slow
def test_chunked_grad_conv_equals_lax_conv_for_every_preset_convolution(monkeypatch):
    """The CPU path and XLA's convolution agree to 1e-5 on the forward and both gradients,
    for each convolution the presets use (kernel gradients summed over 2 batch chunks)."""
    from jax import lax

    from jssl.models import conv as conv_module

    convs = _preset_convs(monkeypatch)
    monkeypatch.undo()
    assert len(convs) >= 20  # the stems, every stage's 3x3s and strided 1x1s
    assert {(k[1][0], k[2][0]) for k in convs} >= {(7, 2), (3, 1), (3, 2), (1, 1), (1, 2)}
    rng = np.random.default_rng(0)
    inputs = [
        (
            jnp.asarray(rng.normal(size=x), jnp.float32),
            jnp.asarray(rng.normal(size=w) / np.sqrt(np.prod(w[:3])), jnp.float32),
        )
        for x, w, _, _ in convs
    ]

    def outputs(fn, conv_inputs):
        return [
            fn(x, w, strides, pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
            for (x, w), (_, _, strides, pad) in zip(conv_inputs, convs, strict=True)
        ]

    def run(fn):
        def f(conv_inputs):
            ys = outputs(fn, conv_inputs)
            return sum(jnp.sum(jnp.sin(y)) for y in ys), ys

        return jax.jit(jax.value_and_grad(f, has_aux=True))(inputs)

    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)  # one image per chunk
    (_, ys), grads = run(conv_module.chunked_grad_conv)
    (_, ys_ref), grads_ref = run(lax.conv_general_dilated)
    for got, ref in zip(
        jax.tree.leaves((ys, grads)), jax.tree.leaves((ys_ref, grads_ref)), strict=True
    ):
        scale = float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("batch, chunks", [(8, 4), (6, 3), (3, 3)])
def test_chunked_grad_takes_at_most_max_chunks_that_divide_the_batch(batch, chunks, monkeypatch):
    from jax import lax

    from jssl.models import conv as conv_module

    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)  # one image per chunk, but for the cap
    monkeypatch.setattr(conv_module, "MAX_CHUNKS", 4)
    rng = np.random.default_rng(batch)
    x = jnp.asarray(rng.normal(size=(batch, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)

    def loss(fn):
        nhwc = conv_module.NHWC
        return lambda x, w: jnp.sum(jnp.sin(fn(x, w, (1, 1), "SAME", dimension_numbers=nhwc)))

    grad = jax.grad(loss(conv_module.chunked_grad_conv), argnums=(0, 1))
    jaxpr = str(jax.make_jaxpr(grad)(x, w))
    # The forward, then per chunk the vjp's own forward (unused, dropped by XLA) and the
    # two gradients.
    assert jaxpr.count("conv_general_dilated[") == 1 + 3 * chunks
    want = jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, w)
    for a, b in zip(grad(x, w), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_im2col_conv_passes_unsupported_cases_to_lax():
    from jax import lax

    from jssl.models.conv import chunked_grad_conv, conv_fn, im2col_conv

    x = jnp.ones((1, 6, 6, 4))
    w = jnp.ones((3, 3, 2, 4))  # two groups
    dn = ("NHWC", "HWIO", "NHWC")
    kwargs = dict(dimension_numbers=dn, feature_group_count=2, rhs_dilation=(2, 2))
    np.testing.assert_array_equal(
        im2col_conv(x, w, (1, 1), "SAME", **kwargs),
        lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs),
    )

    # NHWC given as strings or as ConvDimensionNumbers takes the matmul path; None (NCHW in
    # lax) and other layouts are lax's.
    def ops(f, *args):
        return str(jax.make_jaxpr(f)(*args))

    x, w = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))
    for layout in (dn, lax.conv_dimension_numbers(x.shape, w.shape, dn)):
        conv = functools.partial(im2col_conv, window_strides=(2, 2), padding="SAME")
        jaxpr = ops(functools.partial(conv, dimension_numbers=layout), x, w)
        assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
    x_nchw, w_oihw = jnp.ones((1, 2, 6, 6)), jnp.ones((4, 2, 3, 3))
    np.testing.assert_array_equal(
        im2col_conv(x_nchw, w_oihw, (1, 1), "SAME"),
        lax.conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
    )
    assert "conv_general_dilated" in ops(lambda x: im2col_conv(x, w_oihw, (1, 1), "SAME"), x_nchw)
    assert conv_fn("xla", 2) is None and conv_fn("im2col_strided", 1) is None
    assert conv_fn("im2col_strided", 2) is im2col_conv and conv_fn("im2col", 1) is im2col_conv
    assert conv_fn("chunked_grad", 1) is chunked_grad_conv
    np.testing.assert_array_equal(
        chunked_grad_conv(x_nchw, w_oihw, (1, 1), "SAME"),
        lax.conv_general_dilated(x_nchw, w_oihw, (1, 1), "SAME"),
    )
    with pytest.raises(ValueError, match="conv_impl 'fft'.*im2col_strided"):
        conv_fn("fft", 1)


@pytest.mark.parametrize("impl", ["im2col", "im2col_strided", "chunked_grad"])
def test_resnet_conv_impls_share_parameters_and_outputs(impl):
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 32, 32, 3)), jnp.float32)
    ref = create_model("resnet18", stem="cifar", width=8, stage_sizes=(1, 1))
    alt = create_model("resnet18", stem="cifar", width=8, stage_sizes=(1, 1), conv_impl=impl)
    variables = _init(ref, x)
    assert jax.tree.structure(_abstract_init(alt, x.shape)) == jax.tree.structure(variables)
    (f_ref, _), new_ref = _apply(ref, variables, x, train=True, mutable=["batch_stats"])
    (f_alt, _), new_alt = _apply(alt, variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(f_alt, f_ref, rtol=1e-4, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), new_alt, new_ref
    )


@pytest.mark.parametrize("preset", ["cifar10_folder", "stl10", "imagenet"])
def test_config_presets_spell_out_every_resnet_argument(preset):
    """Command-line flags can change config fields but not add them, so a preset lists
    every ResNet argument (width, stage_sizes, conv_impl) with the network's defaults."""
    from benchmarks.throughput import load_config

    c = load_config(f"configs/simclr.py:{preset}")
    assert {"stem", "width", "stage_sizes", "conv_impl"} <= set(c.model.kwargs)
    shape = (1, c.augment.crop_size, c.augment.crop_size, 3)
    spelled = _abstract_init(create_model(c.model.name, **c.model.kwargs), shape)
    default = _abstract_init(create_model(c.model.name, stem=c.model.kwargs.stem), shape)
    assert jax.tree.map(lambda a: a.shape, spelled) == jax.tree.map(lambda a: a.shape, default)
