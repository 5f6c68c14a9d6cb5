"""I-JEPA's loss and multi-block masks: by hand, a float64 numpy reference of the authors'
code (src/train.py:295-313, src/masks/multiblock.py), the masks' geometry and truncation,
jit == no-jit, and the loss and its gradient on 8 devices equal to 1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jssl import losses, masks, sharding


def _np_ijepa(pred, feats, idx):
    """ijepa's train.py in float64: F.layer_norm, apply_masks, F.smooth_l1_loss (mean)."""
    h = np.asarray(feats, np.float64)
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    target = np.stack(
        [np.stack([h[n, idx[m, n]] for n in range(h.shape[0])]) for m in range(len(idx))]
    )
    d = np.abs(np.asarray(pred, np.float64) - target)
    return np.mean(np.where(d < 1, 0.5 * d**2, d - 0.5))


def _official_size(r, grid, scale, aspect):
    """multiblock.py _sample_block_size, as the authors wrote it."""
    height, width = grid
    max_keep = int(height * width * (scale[0] + r * (scale[1] - scale[0])))
    ar = aspect[0] + r * (aspect[1] - aspect[0])
    h, w = int(round(math.sqrt(max_keep * ar))), int(round(math.sqrt(max_keep / ar)))
    while h >= height:
        h -= 1
    while w >= width:
        w -= 1
    return h, w


def _data(seed, m=3, n=4, k=5, length=9, d=6):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(m, n, k, d)).astype(np.float32)
    feats = (3 * rng.normal(size=(n, length, d)) + 1).astype(np.float32)
    idx = rng.integers(0, length, size=(m, n, k)).astype(np.int32)
    return pred, feats, idx


def test_ijepa_loss_by_hand():
    # One block, one image, one token, D = 2: features (1, 3) -> layer norm (-1, 1)
    # (variance 1, eps 1e-5); prediction (0.5, 3): |d| = (1.5, 2.0) -> smooth L1
    # (1.0, 1.5) minus the eps effect, mean 1.25.
    feats = np.array([[[1.0, 3.0], [0.0, 0.0]]], np.float32)
    pred = np.array([[[[0.5, 3.0]]]], np.float32)
    idx = np.zeros((1, 1, 1), np.int32)
    scale = 1 / math.sqrt(1 + 1e-5)
    want = ((0.5 + scale) - 0.5 + (3.0 - scale) - 0.5) / 2
    got = losses.ijepa_loss(pred, feats, idx)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert abs(want - 1.25) < 1e-4


def test_ijepa_loss_against_the_authors_code_valid_tokens_and_no_target_gradient():
    pred, feats, idx = _data(0)
    np.testing.assert_allclose(
        float(losses.ijepa_loss(pred, feats, idx)), _np_ijepa(pred, feats, idx), rtol=1e-5
    )
    # valid: the mean over the kept tokens only == the loss of the truncated blocks.
    valid = np.broadcast_to(np.arange(5) < 3, idx.shape)
    np.testing.assert_allclose(
        float(losses.ijepa_loss(pred, feats, idx, valid=valid)),
        _np_ijepa(pred[:, :, :3], feats, idx[:, :, :3]),
        rtol=1e-5,
    )
    g_pred, g_feats = jax.grad(lambda p, f: losses.ijepa_loss(p, f, idx), argnums=(0, 1))(
        pred, feats
    )
    assert np.any(np.asarray(g_pred)) and not np.any(np.asarray(g_feats))
    np.testing.assert_allclose(
        float(jax.jit(losses.ijepa_loss)(pred, feats, idx)),
        float(losses.ijepa_loss(pred, feats, idx)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="must be"):
        losses.ijepa_loss(pred, feats, idx[:, :, :2])


def test_ijepa_loss_and_gradient_on_8_devices_equal_1():
    pred, feats, idx = _data(1, m=2, n=8, k=4, length=10, d=4)
    mesh = sharding.make_mesh()
    on = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    f = jax.jit(jax.value_and_grad(losses.ijepa_loss))
    one = f(pred, feats, idx)
    eight = f(
        on(pred, PartitionSpec(None, "data")),
        on(feats, PartitionSpec("data")),
        on(idx, PartitionSpec(None, "data")),
    )
    np.testing.assert_allclose(float(eight[0]), float(one[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(eight[1]), np.asarray(one[1]), rtol=1e-5, atol=1e-9)


def test_standardise_by_position_by_hand_blind_to_position_and_on_8_devices():
    # Two images, two positions, D = 1: position 0 holds (1, 3) -> mean 2, variance 1 ->
    # (-1, 1) / sqrt(1 + eps); position 1 holds (5, 5) -> (0, 0).
    feats = np.array([[[1.0], [5.0]], [[3.0], [5.0]]], np.float32)
    s = 1 / math.sqrt(1 + 1e-5)
    np.testing.assert_allclose(
        losses.standardise_by_position(feats), [[[-s], [0]], [[s], [0]]], rtol=1e-6
    )
    # Anything that depends on the position alone leaves nothing to predict, and adding it
    # changes nothing (float64 reference: the images' features standardised).
    _, feats, idx = _data(2, m=2, n=8, k=4, length=10, d=4)
    where = np.random.default_rng(3).integers(-4, 5, size=(1, 10, 4)).astype(np.float32)
    only_where = losses.standardise_by_position(np.broadcast_to(where, feats.shape))
    assert not np.any(only_where)  # small integers: their mean is exact
    f64 = np.asarray(feats, np.float64)
    want = (f64 - f64.mean(0)) / np.sqrt(f64.var(0) + 1e-5)
    np.testing.assert_allclose(
        losses.standardise_by_position(feats + 10 * where), want, rtol=1e-4, atol=1e-5
    )
    # On the global batch: the mean over images sharded over 8 devices is the 1-device mean.
    pred = np.random.default_rng(4).normal(size=idx.shape + (4,)).astype(np.float32)
    mesh = sharding.make_mesh()
    on = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    loss = lambda p, h: losses.ijepa_loss(p, losses.standardise_by_position(h), idx)
    f = jax.jit(jax.value_and_grad(loss))
    one = f(pred, feats)
    eight = f(on(pred, PartitionSpec(None, "data")), on(feats, PartitionSpec("data")))
    np.testing.assert_allclose(float(eight[0]), float(one[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(eight[1]), np.asarray(one[1]), rtol=1e-5, atol=1e-9)
    # Per-device statistics would differ: the check can fail.
    local = np.concatenate([c - c.mean(0) for c in np.split(f64, 8)])
    assert not np.allclose(local, f64 - f64.mean(0), atol=1e-3)


# ----------------------------------------------------------------------------- masks

GRID = (14, 14)  # 224 px at patch 16


def test_block_size_is_the_authors_formula():
    for r in np.linspace(0.0, 1.0, 101):
        for scale, aspect in (((0.15, 0.2), (0.75, 1.5)), ((0.85, 1.0), (1.0, 1.0))):
            h, w = masks.block_size(jnp.float32(r), GRID, scale, aspect)
            assert (int(h), int(w)) == _official_size(float(np.float32(r)), GRID, scale, aspect)
            assert int(h) * int(w) <= masks.largest_block(GRID, scale, aspect)


def _sets(indices, valid):
    return [set(np.asarray(i)[np.asarray(v)].tolist()) for i, v in zip(indices, valid, strict=True)]


@pytest.mark.parametrize("seed", range(4))
def test_multiblock_masks_geometry_truncation_and_disjointness(seed):
    n = 16
    got = jax.jit(lambda k: masks.multiblock_masks(k, n, GRID))(jax.random.PRNGKey(seed))
    m = got.targets.shape[0]
    assert got.targets.shape[:2] == (4, n) and got.context.shape[0] == n
    sizes = set()
    for b in range(m):
        for i, block in enumerate(_sets(got.targets[b], got.targets_valid[b])):
            rows = sorted({p // GRID[1] for p in block})
            cols = sorted({p % GRID[1] for p in block})
            # a full h x w rectangle of contiguous rows and columns
            assert len(block) == len(rows) * len(cols), (b, i)
            assert rows == list(range(rows[0], rows[-1] + 1))
            assert cols == list(range(cols[0], cols[-1] + 1))
            sizes.add((len(rows), len(cols)))
    assert len(sizes) == 1  # one block size per batch
    ((h, w),) = sizes
    assert 0.15 * 196 * 0.75 <= h * w <= 0.2 * 196 * 1.2
    contexts = _sets(got.context, got.context_valid)
    assert len({len(c) for c in contexts}) == 1 and len(contexts[0]) > 10  # truncated to one count
    for i, c in enumerate(contexts):
        targets = set().union(*(_sets(got.targets[b], got.targets_valid[b])[i] for b in range(m)))
        assert not c & targets, i  # outside every target block of its image
    # row-major order, and the truncation keeps the first patches
    idx, valid = np.asarray(got.context), np.asarray(got.context_valid)
    assert all(np.all(np.diff(idx[i][valid[i]]) > 0) for i in range(n))


def test_multiblock_masks_relax_when_no_corner_leaves_enough_patches():
    # 4 x 4 grid, four 2 x 2 targets, a 3 x 3 context, min_keep 5: the targets of an image
    # often leave no 3 x 3 corner with more than 5 free patches, and then the context drops
    # the constraint of the last target blocks (as the official retry loop): every context
    # keeps more than min_keep patches, and some overlap a target block.
    n = 64
    got = masks.multiblock_masks(
        jax.random.PRNGKey(0), n, (4, 4), target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0),
        context_scale=(0.6, 0.6), min_keep=5,
    )  # fmt: skip
    contexts = _sets(got.context, got.context_valid)
    assert len({len(c) for c in contexts}) == 1 and len(contexts[0]) > 5
    first_target = _sets(got.targets[0], got.targets_valid[0])
    overlaps = [bool(c & t) for c, t in zip(contexts, first_target, strict=True)]
    assert any(overlaps)


def test_multiblock_masks_jit_equals_no_jit():
    a = jax.jit(lambda k: masks.multiblock_masks(k, 8, GRID))(jax.random.PRNGKey(5))
    b = masks.multiblock_masks(jax.random.PRNGKey(5), 8, GRID)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_context_truncation_per_group_of_images():
    """group=1 keeps each image's own count; group=g truncates to the smallest count of
    each g consecutive images (one GPU's batch in the official runs); None: the batch's."""
    key, n = jax.random.PRNGKey(3), 12
    own = np.asarray(masks.multiblock_masks(key, n, GRID, group=1).context_valid).sum(1)
    assert len(set(own.tolist())) > 1
    for group in (4, 5, None):
        got = masks.multiblock_masks(key, n, GRID, group=group)
        counts = np.asarray(got.context_valid).sum(1)
        g = group or n
        want = [own[i - i % g : i - i % g + g].min() for i in range(n)]
        np.testing.assert_array_equal(counts, want)
        np.testing.assert_array_equal(
            got.context, masks.multiblock_masks(key, n, GRID, group=1).context
        )
