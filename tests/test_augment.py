"""augment: measured statistics of the random ops, colour maths against colorsys,
identities, jit equals no-jit, key determinism and the batched view makers."""

import colorsys
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jssl import augment

N_KEYS = 2000


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _rgb(seed=0, shape=(8, 8, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _uint8(seed, shape):
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)


def _two_views_fn(**kwargs):
    # Compilation dominates this file's runtime: each policy variant is compiled once.
    return jax.jit(functools.partial(augment.two_views, **kwargs))


# ---------------------------------------------------------------------------
# Conversion


def test_to_float_and_normalize():
    x = jnp.array([[[0, 128, 255]]], jnp.uint8)
    np.testing.assert_allclose(augment.to_float(x), [[[0.0, 128 / 255, 1.0]]], rtol=1e-6)
    assert augment.to_float(x).dtype == jnp.float32
    f = jnp.full((1, 1, 3), 0.25, jnp.float16)
    assert augment.to_float(f).dtype == jnp.float32
    with pytest.raises(TypeError, match="uint8"):
        augment.to_float(jnp.zeros((1, 1, 3), jnp.int32))
    y = augment.normalize(jnp.ones((2, 2, 3)), (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    np.testing.assert_allclose(y[0, 0], [1.0, 3.0, 0.5])


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        augment.random_flip(jax.random.key(0), jnp.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        augment.eval_view(jnp.zeros((4, 4, 3), jnp.uint8), size=4)
    with pytest.raises(ValueError, match="mean and std"):
        augment.eval_view(jnp.zeros((1, 4, 4, 3), jnp.uint8), size=4, mean=(0.5,) * 3)


# ---------------------------------------------------------------------------
# Geometry


def test_crop_box_area_fraction_and_ratio_cover_ranges():
    boxes = jax.jit(jax.vmap(lambda k: augment.crop_box(k, 32, 32)))(_keys(N_KEYS))
    y0, x0, h, w = np.asarray(boxes).T
    frac = h * w / (32 * 32)
    assert frac.min() >= 0.08 - 1e-5 and frac.max() <= 1.0 + 1e-5
    assert frac.min() < 0.1 and frac.max() > 0.95  # reaches both ends of the range
    counts, _ = np.histogram(frac, bins=4, range=(0.08, 1.0))
    assert counts.min() > 0.05 * N_KEYS, counts  # and covers it
    aspect = w / h
    assert aspect.min() >= 0.75 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert aspect.min() < 0.8 and aspect.max() > 1.25
    # Inside the image; positions spread over the free room.
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= 32 + 1e-4).all() and (x0 + w <= 32 + 1e-4).all()
    assert np.median(x0 / np.maximum(32 - w, 1e-6)) == pytest.approx(0.5, abs=0.1)


def test_crop_box_fallback_is_central_clamped_ratio():
    # On a 16x64 image no box with area >= 0.9 and ratio 1 fits: torchvision falls
    # back to the largest central box with the ratio clamped to the range.
    box = augment.crop_box(jax.random.key(3), 16, 64, scale=(0.9, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(box, [0.0, 24.0, 16.0, 16.0], atol=1e-5)


@pytest.mark.parametrize("size, atol", [((64, 64), 1e-3), ((8, 8), 0.1)])
def test_random_resized_crop_samples_its_box(size, atol):
    # An image whose channels encode the pixel's own (row, col): the output must
    # read the coordinates of the sampled box at the output pixel centres. Exact
    # when upsampling; when shrinking, the sampled antialiasing triangle shifts
    # the centroid by a few hundredths of a pixel.
    hh, ww = 32, 48
    rows, cols = jnp.meshgrid(jnp.arange(hh), jnp.arange(ww), indexing="ij")
    image = jnp.stack([rows / hh, cols / ww, jnp.zeros_like(rows)], -1).astype(jnp.float32)
    for seed in range(4):
        key = jax.random.key(seed)
        y0, x0, h, w = np.asarray(augment.crop_box(key, hh, ww))
        out = np.asarray(augment.random_resized_crop(key, image, size=size))
        assert out.shape == (*size, 3)
        for got, start, extent, n, dim in (
            (out[:, 0, 0] * hh, y0, h, size[0], hh),
            (out[0, :, 1] * ww, x0, w, size[1], ww),
        ):
            want = start + (np.arange(n) + 0.5) * extent / n - 0.5
            # Away from the image border, where the filter's support is truncated.
            radius = max(1.0, extent / n) + 0.5
            inner = (want > radius - 0.5) & (want < dim - 0.5 - radius)
            assert inner.sum() >= n // 2
            np.testing.assert_allclose(got[inner], want[inner], atol=atol)


def test_center_resize_and_eval_view():
    images = _uint8(0, (2, 12, 12, 3))
    same = augment.eval_view(images, size=12)
    np.testing.assert_array_equal(same, augment.to_float(images))
    const = jnp.full((1, 12, 12, 1), 77, jnp.uint8)
    small = augment.eval_view(const, size=(6, 4), mean=(0.5,), std=(0.25,))
    assert small.shape == (1, 6, 4, 1) and small.dtype == jnp.float32
    np.testing.assert_allclose(small, (77 / 255 - 0.5) / 0.25, atol=1e-5)
    big = augment.center_resize(augment.to_float(images[0]), size=20)
    assert big.shape == (20, 20, 3)
    assert float(big.min()) >= 0.0 and float(big.max()) <= 1.0


# ---------------------------------------------------------------------------
# Flip, grayscale, solarize: probabilities and semantics


def test_flip_probability_and_semantics():
    image = jnp.arange(6, dtype=jnp.float32).reshape(1, 6, 1) / 6
    outs = jax.jit(jax.vmap(lambda k: augment.random_flip(k, image)))(_keys(N_KEYS))
    flipped = np.asarray(outs[:, 0, 0, 0] != image[0, 0, 0])
    assert flipped.mean() == pytest.approx(0.5, abs=0.04)
    np.testing.assert_array_equal(outs[np.argmax(flipped)], image[:, ::-1])
    np.testing.assert_array_equal(outs[np.argmin(flipped)], image)


def test_grayscale_probability_and_luma():
    image = _rgb(1, (2, 2, 3))
    outs = np.asarray(
        jax.jit(jax.vmap(lambda k: augment.random_grayscale(k, image)))(_keys(N_KEYS))
    )
    gray = (outs[..., 0] == outs[..., 1]).all(axis=(1, 2)) & (outs[..., 1] == outs[..., 2]).all(
        axis=(1, 2)
    )
    assert gray.mean() == pytest.approx(0.2, abs=0.03)
    luma = np.asarray(image) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(outs[np.argmax(gray)][..., 0], luma, rtol=1e-6)
    np.testing.assert_array_equal(outs[np.argmin(gray)], image)
    single = _rgb(1, (2, 2, 1))
    np.testing.assert_array_equal(augment.random_grayscale(jax.random.key(0), single, p=1), single)


def test_solarize():
    x = jnp.linspace(0, 1, 11).reshape(1, 11, 1)
    out = augment.solarize(jax.random.key(0), x, p=1.0, threshold=0.5)
    np.testing.assert_allclose(out, jnp.where(x >= 0.5, 1 - x, x))
    np.testing.assert_array_equal(augment.solarize(jax.random.key(0), x, p=0.0), x)
    applied = jax.jit(jax.vmap(lambda k: augment.solarize(k, x, p=0.3)))(_keys(N_KEYS))
    rate = float(jnp.mean(applied[:, 0, -1, 0] == 0.0))  # the pixel 1.0 becomes 0.0
    assert rate == pytest.approx(0.3, abs=0.04)


# ---------------------------------------------------------------------------
# Colour maths


def test_hsv_matches_colorsys():
    rng = np.random.default_rng(0)
    rgb = np.concatenate(
        [rng.uniform(size=(500, 3)), np.eye(3), 1 - np.eye(3), [[0, 0, 0], [1, 1, 1], [0.3] * 3]]
    ).astype(np.float32)
    hsv = np.asarray(augment.rgb_to_hsv(jnp.asarray(rgb)))
    want = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.astype(np.float64)])
    np.testing.assert_allclose(hsv, want, atol=1e-5)
    back = np.asarray(augment.hsv_to_rgb(jnp.asarray(want, jnp.float32)))
    want_rgb = np.array([colorsys.hsv_to_rgb(*p) for p in want])
    np.testing.assert_allclose(back, want_rgb, atol=1e-5)
    np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(rgb)), rgb, atol=1e-5)
    # A hue shift of a quarter turn, against colorsys.
    shifted = np.asarray(augment.adjust_hue(jnp.asarray(rgb), 0.25))
    ref = np.array([colorsys.hsv_to_rgb((h + 0.25) % 1.0, s, v) for h, s, v in want])
    np.testing.assert_allclose(shifted, ref, atol=1e-5)


def test_adjustments_neutral_factors_are_identity():
    x = _rgb(2)
    np.testing.assert_array_equal(augment.adjust_brightness(x, 1.0), x)
    np.testing.assert_allclose(augment.adjust_contrast(x, 1.0), x, atol=1e-7)
    np.testing.assert_allclose(augment.adjust_saturation(x, 1.0), x, atol=1e-7)
    for turns in (0.0, 1.0, -1.0):  # a full turn of hue is the identity
        np.testing.assert_allclose(augment.adjust_hue(x, turns), x, atol=1e-5)
    # Extreme factors: black, flat mean gray, grayscale.
    np.testing.assert_array_equal(augment.adjust_brightness(x, 0.0), jnp.zeros_like(x))
    flat = augment.adjust_contrast(x, 0.0)
    np.testing.assert_allclose(flat, jnp.mean(augment.rgb_to_grayscale(x)), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_saturation(x, 0.0), augment.grayscale(x), atol=1e-6)


def test_color_jitter_zero_strengths_and_p0_are_identity():
    x = _rgb(3)
    for key in _keys(5):
        np.testing.assert_array_equal(augment.color_jitter(key, x, p=1.0), x)
        out = augment.color_jitter(
            key, x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.0
        )
        np.testing.assert_array_equal(out, x)


def test_color_jitter_probability_and_range():
    x = _rgb(4, (4, 4, 3))
    jit = functools.partial(
        augment.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8
    )
    outs = jax.jit(jax.vmap(lambda k: jit(k, x)))(_keys(N_KEYS))
    changed = np.asarray(jnp.any(jnp.abs(outs - x) > 1e-6, axis=(1, 2, 3)))
    assert changed.mean() == pytest.approx(0.8, abs=0.03)
    assert float(outs.min()) >= 0.0 and float(outs.max()) <= 1.0


def test_color_jitter_brightness_factor_range():
    x = 0.1 + 0.4 * _rgb(5, (4, 4, 3))  # <= 0.5, so factors <= 1.4 never clip
    outs = jax.jit(jax.vmap(lambda k: augment.color_jitter(k, x, brightness=0.4, p=1.0)))(
        _keys(500)
    )
    factors = np.asarray(outs / x).reshape(500, -1)
    np.testing.assert_allclose(factors, factors[:, :1].repeat(factors.shape[1], 1), rtol=1e-5)
    f = factors[:, 0]
    assert f.min() >= 0.6 - 1e-5 and f.max() <= 1.4 + 1e-5
    assert f.min() < 0.65 and f.max() > 1.35


def test_color_jitter_equals_plain_random_order_loop():
    # color_jitter applies hue once, outside the switch (see its docstring); it
    # must equal the naive loop "for op in permutation: x = op(x)". The reference
    # mirrors the documented key use: split(key, 3) -> (apply, order, factors).
    s = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    lo = np.array([0.6, 0.6, 0.6, -0.1], np.float32)
    hi = np.array([1.4, 1.4, 1.4, 0.1], np.float32)
    x = _rgb(6)
    keys = _keys(40, seed=7)
    got = jax.jit(jax.vmap(lambda k: augment.color_jitter(k, x, p=1.0, **s)))(keys)
    ops = [
        jax.jit(f)
        for f in (
            augment.adjust_brightness,
            augment.adjust_contrast,
            augment.adjust_saturation,
            augment.adjust_hue,
        )
    ]
    orders = set()
    for key, got_k in zip(keys, got, strict=True):
        _, k_order, k_factors = jax.random.split(key, 3)
        factors = lo + np.asarray(jax.random.uniform(k_factors, (4,))) * (hi - lo)
        order = tuple(int(i) for i in jax.random.permutation(k_order, 4))
        orders.add(order)
        want = x
        for i in order:
            want = ops[i](want, factors[i])
        np.testing.assert_allclose(got_k, want, atol=1e-5)
    assert len(orders) > 12  # many of the 24 orders were exercised


def test_colour_ops_on_single_channel():
    x = _rgb(8, (4, 4, 1))
    key = jax.random.key(0)
    np.testing.assert_array_equal(augment.adjust_saturation(x, 0.0), x)
    np.testing.assert_array_equal(augment.adjust_hue(x, 0.3), x)
    out = augment.color_jitter(key, x, saturation=0.8, hue=0.5, p=1.0)
    np.testing.assert_array_equal(out, x)  # only 3-channel ops requested: no-op
    out = augment.color_jitter(key, x, brightness=0.4, contrast=0.4, p=1.0)
    assert out.shape == x.shape and not np.allclose(out, x)


# ---------------------------------------------------------------------------
# Blur


def test_gaussian_blur():
    assert augment.default_blur_kernel_size(32, 32) == 3
    assert augment.default_blur_kernel_size(224, 224) == 23
    assert augment.default_blur_kernel_size(8, 8) == 3
    with pytest.raises(ValueError, match="odd"):
        augment.gaussian_filter(jnp.zeros((8, 8, 3)), 1.0, kernel_size=4)
    const = jnp.full((16, 16, 3), 0.3)
    blurred = augment.gaussian_blur(jax.random.key(0), const, p=1.0, kernel_size=7)
    np.testing.assert_allclose(blurred, const, atol=1e-6)  # reflect padding: no dark rim
    noise = _rgb(9, (32, 32, 1))
    out = augment.gaussian_filter(noise, 2.0, kernel_size=7)
    assert float(jnp.mean(out)) == pytest.approx(float(jnp.mean(noise)), abs=0.01)
    assert float(jnp.var(out)) < 0.2 * float(jnp.var(noise))
    # Against scipy: numpy's "reflect" padding is scipy's "mirror".
    taps = np.exp(-0.5 * (np.arange(-3, 4) / 2.0) ** 2)
    want = np.asarray(noise, np.float64)
    for axis in (0, 1):
        want = scipy.ndimage.correlate1d(want, taps / taps.sum(), axis=axis, mode="mirror")
    np.testing.assert_allclose(out, want, atol=1e-5)
    weak = augment.gaussian_filter(noise, 0.1, kernel_size=7)  # sigma 0.1: ~identity
    np.testing.assert_allclose(weak, noise, atol=1e-6)
    np.testing.assert_array_equal(augment.gaussian_blur(jax.random.key(0), noise, p=0.0), noise)
    # p=0.5: the not-blurred half is exactly the input (unit-impulse kernel).
    outs = jax.jit(jax.vmap(lambda k: augment.gaussian_blur(k, noise, p=0.5)))(_keys(400))
    same = np.asarray(jnp.all(outs == noise, axis=(1, 2, 3)))
    assert same.mean() == pytest.approx(0.5, abs=0.08)


# ---------------------------------------------------------------------------
# Policies


def test_two_views_shapes_range_keys_and_jit_equals_no_jit():
    images = _uint8(10, (4, 16, 16, 3))
    images = images.at[1].set(images[0])  # two identical examples
    fn = _two_views_fn(size=8)
    v1, v2 = fn(jax.random.key(0), images)
    for v in (v1, v2):
        assert v.shape == (4, 8, 8, 3) and v.dtype == jnp.float32
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert not np.allclose(v1, v2)  # the two views differ
    assert not np.allclose(v1[0], v1[1])  # identical images, their own randomness
    again = fn(jax.random.key(0), images)
    np.testing.assert_array_equal(again[0], v1)  # same key: same views
    np.testing.assert_array_equal(again[1], v2)
    other = fn(jax.random.key(1), images)
    assert not np.allclose(other[0], v1)
    # Un-jitted, un-batched: an example's view depends only on its own key
    # split(split(key, B)[b], 2)[v], and eager execution matches the jitted batch.
    example_key = jax.random.split(jax.random.key(0), 4)[2]
    k1, _ = jax.random.split(example_key)
    alone = augment.simclr_view(k1, images[2], size=8)
    np.testing.assert_allclose(alone, v1[2], atol=1e-5)


def test_two_views_single_channel_with_normalization_and_blur():
    images = _uint8(11, (4, 12, 12, 1))
    fn = _two_views_fn(size=8, blur_p=0.5, mean=(0.5,), std=(0.25,))
    v1, v2 = fn(jax.random.PRNGKey(0), images)  # legacy uint32 keys work too
    for v in (v1, v2):
        assert v.shape == (4, 8, 8, 1) and v.dtype == jnp.float32
        raw = v * 0.25 + 0.5
        assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5
    assert float(jnp.min(v1)) < 0.0  # normalisation was applied
    assert not np.allclose(v1, v2)
