"""Decoders and the recovery methods (denoising, inpainting, colorization)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import denoising as denoising_config
from configs import inpainting as inpainting_config
from jssl import pretext
from jssl.methods.recovery import rebalancing_weights
from jssl.models import ConvNet, Decoder, EncoderDecoder, VectorDecoder, create_model
from jssl.models.decoders import stage_sizes
from tests.helpers import (
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_init,
    jit_views,
    records,
    run_params,
    slow_runs,
    smoke_args,
    tiny_config,
)

# Learning rates (x 32 / 256) at which four steps clearly lower each reconstruction loss.
TRAIN_PY_RUNS = {
    "denoising": smoke_args("denoising", "--config.optim.learning_rate=0.01"),
    "inpainting": smoke_args("inpainting", "--config.optim.learning_rate=0.005"),
    "colorization": smoke_args("colorization", "--config.optim.learning_rate=0.01"),
}
SLOW_RUNS = slow_runs(*TRAIN_PY_RUNS)


def output_shape(module, x, **kwargs):
    """Output shape of module(x) without running it (init and apply under eval_shape)."""

    def run(x):
        variables = module.init(jax.random.PRNGKey(0), x, train=False, **kwargs)
        return module.apply(variables, x, train=False, **kwargs)

    out = jax.eval_shape(run, x)
    return out[0].shape if isinstance(out, tuple) else out.shape


def test_stage_sizes():
    assert stage_sizes(4, 16) == [8, 16]
    assert stage_sizes(3, 96) == [6, 12, 24, 48, 96]
    assert stage_sizes(4, 15) == [8, 15]
    assert stage_sizes(8, 8) == [] and stage_sizes(8, 4) == []


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "transpose"])
@pytest.mark.parametrize(
    "fmap, out", [((4, 4, 32), (16, 16, 1)), ((3, 3, 16), (96, 96, 3)), ((4, 4, 8), (15, 15, 2))]
)
def test_decoder_output_shapes(upsample, fmap, out):
    dec = Decoder(upsample=upsample)
    x = jnp.zeros((2, *fmap))
    assert output_shape(dec, x, out_shape=out) == (2, *out)


def test_decoder_after_convnet_and_resnets():
    backbones = {
        "convnet": (ConvNet(widths=(8, 16, 32)), 16),
        "resnet18_cifar": (create_model("resnet18", width=8, stem="cifar"), 32),
        "resnet18_imagenet": (create_model("resnet18", width=8, stem="imagenet"), 96),
    }
    for name, (net, size) in backbones.items():
        model = EncoderDecoder(backbone=net, decoder=Decoder())
        assert output_shape(model, jnp.zeros((2, size, size, 3))) == (2, size, size, 3), name


def test_vector_decoder_and_bad_upsampling():
    vd = VectorDecoder(seed_shape=(2, 2, 8), decoder=Decoder())
    assert output_shape(vd, jnp.zeros((3, 5)), out_shape=(8, 8, 1)) == (3, 8, 8, 1)
    with pytest.raises(ValueError, match="nearest, bilinear, transpose"):
        output_shape(Decoder(upsample="pixelshuffle"), jnp.zeros((1, 2, 2, 4)), out_shape=(4, 4, 1))


def test_inpainting_views_hide_exactly_the_mask():
    config = inpainting_config.get_config("digits,smoke")
    images = jax.random.randint(jax.random.PRNGKey(0), (8, 8, 8, 1), 0, 255).astype(jnp.uint8)
    masked, clean, masks = jit_views("inpainting", config)(jax.random.PRNGKey(1), {"image": images})
    assert masks.shape == (8, 16, 16, 1)
    np.testing.assert_array_equal(masks.mean(axis=(1, 2, 3)), 0.25)  # central 8x8 of 16x16
    m = np.broadcast_to(np.asarray(masks), masked.shape)
    np.testing.assert_array_equal(np.asarray(masked)[m], config.inpainting.fill)
    np.testing.assert_array_equal(np.asarray(masked)[~m], np.asarray(clean)[~m])


def test_denoising_views():
    config = denoising_config.get_config("digits,smoke")
    images = jnp.full((64, 8, 8, 1), 128, jnp.uint8)
    noisy, clean = jit_views("denoising", config)(jax.random.PRNGKey(2), {"image": images})
    diff = np.asarray(noisy - clean)
    assert abs(diff.std() - config.denoising.std) < 0.03 and abs(diff.mean()) < 0.01
    config.denoising.noise = "salt_and_pepper"
    noisy, clean = jit_views("denoising", config)(jax.random.PRNGKey(2), {"image": images})
    assert abs((np.asarray(noisy) != np.asarray(clean)).mean() - config.denoising.amount) < 0.02


def test_colorization_model_sees_only_lightness():
    """Two images with the same L but different ab give the same prediction."""
    rgb = jax.random.uniform(jax.random.PRNGKey(3), (2, 16, 16, 3), minval=0.2, maxval=0.8)
    lab = pretext.rgb_to_lab(rgb)
    recoloured = pretext.lab_to_rgb(lab.at[..., 1:].set(-lab[..., 1:] * 0.5))
    model = EncoderDecoder(
        backbone=ConvNet(widths=(8, 16)), decoder=Decoder(), out_channels=2, lightness_input=True
    )
    variables = jit_init(model, rgb, train=False, seed=4)
    a = model.apply(variables, rgb, train=False)[0]
    b = model.apply(variables, recoloured, train=False)[0]
    assert a.shape == (2, 16, 16, 2)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_rebalancing_weights_golden():
    prior = jnp.array([0.5, 0.25, 0.25, 0.0])
    # mix 0.5, Q 4: 1 / (0.5 p + 0.125) = [2.667, 4, 4, 8]; E_p[w] = 1.333 + 1 + 1 = 3.333.
    w = rebalancing_weights(prior, mix=0.5)
    np.testing.assert_allclose(w, np.array([8 / 3, 4, 4, 8]) / (10 / 3), rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(prior * w), 1.0, rtol=1e-6)
    # mix 1: no rebalancing.
    np.testing.assert_allclose(rebalancing_weights(prior, mix=1.0), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "name, extra",
    run_params(
        ("denoising", {"denoising.noise": "salt_and_pepper"}),
        ("inpainting", {"inpainting.mask": "random", "inpainting.num_blocks": 2}),
        ("colorization", {"colorization.target": "classification", "data.name": "image_folder"}),
    ),
)
def test_one_step_8_devices_equals_1_device(name, extra, tmp_path):
    config = tiny_config(name, batch_size=16, **extra)
    if config.data.name == "image_folder":  # colour images: a tiny RGB folder
        config.data.path = str(_rgb_folder(tmp_path))
        config.data.cache_dir = str(tmp_path / "cache")
    metrics = assert_one_step_8_devices_equals_1(config).metrics
    assert np.isfinite(metrics["loss"])


@functools.cache
def _rgb_images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(24, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(24, 12, 12, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _rgb_folder(root):
    from PIL import Image

    images = _rgb_images()
    for split in ("train", "test"):
        for i, im in enumerate(images):
            d = root / "images" / split / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(d / f"{i}.png")
    return root / "images"


@pytest.mark.parametrize(
    "name, key",
    run_params(
        ("denoising", "noisy_mse"), ("inpainting", "masked_mse"), ("colorization", "ab_rmse")
    ),
)
def test_train_py_smoke(train_py_runs, name, key):
    run = train_py_runs[name]
    assert_finished(run)
    train = records(run.workdir)
    assert key in train[-1]
    # lr 1e-9: each loss stays within 3% of its first value; here it ends at 0.49 (denoising),
    # 0.38 (inpainting) and 0.33 (colorization) times it.
    assert_fell(train, "loss", ratio=0.75)
