"""Pretext view makers: rotations, D4, jigsaw, context patches, masks, noise, Lab."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import pretext


def coords_image(size, channels=1):
    """Float image whose pixel (y, x) holds y * size + x (in every channel)."""
    yx = np.arange(size * size, dtype=np.float32).reshape(size, size, 1)
    return jnp.asarray(np.repeat(yx, channels, axis=-1))


# ----------------------------------------------------------------------------- rotations


def test_rotations_match_labels_and_direction():
    images = jax.random.uniform(jax.random.PRNGKey(0), (3, 5, 5, 2))
    rotated, labels = pretext.all_rotations(images)
    assert rotated.shape == (12, 5, 5, 2)
    np.testing.assert_array_equal(labels, np.tile(np.arange(4), 3))
    for row in range(12):
        b, k = divmod(row, 4)
        assert k == int(labels[row])
        np.testing.assert_array_equal(rotated[row], np.rot90(np.asarray(images[b]), k))
    # 90 degrees counter-clockwise: the top-right corner goes to the top-left.
    marker = jnp.zeros((1, 4, 4, 1)).at[0, 0, 3, 0].set(1.0)
    assert pretext.all_rotations(marker)[0][1, 0, 0, 0] == 1.0


def test_four_quarter_turns_are_identity():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 6, 6, 3))
    y = x
    for _ in range(4):
        y = pretext.rotate90(y, 1)
    np.testing.assert_array_equal(y, x)


def test_dihedral_group():
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, 4, 2))
    outs = [np.asarray(pretext.dihedral(x, k)) for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8  # 8 distinct elements on a generic image
    traced = jax.jit(jax.vmap(pretext.dihedral, in_axes=(None, 0)))(x, jnp.arange(8))
    np.testing.assert_array_equal(traced, np.stack(outs))
    for k in range(8):
        back = pretext.dihedral(pretext.dihedral(x, k), pretext.dihedral_inverse(k))
        np.testing.assert_array_equal(back, x)


# ----------------------------------------------------------------------------- jigsaw


def test_permutation_set_properties():
    perms = pretext.permutation_set(100)
    assert perms.shape == (100, 9) and perms.dtype == np.int32
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    # Greedy max-min: 6 is what P = 100 of 9! reaches (no pair of rows agrees on 4 tiles).
    assert pretext.min_hamming_distance(perms) == 6
    np.testing.assert_array_equal(
        pretext._permutation_set_cached.__wrapped__(100, 9, 0), perms
    )  # deterministic, not just cached
    assert not np.array_equal(pretext.permutation_set(100, seed=1), perms)


def test_permutation_set_1000_is_fast():
    t0 = time.perf_counter()
    perms = pretext._permutation_set_cached.__wrapped__(1000, 9, 0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, elapsed  # ~1.5 s on the 2-core development machine
    assert len({tuple(p) for p in perms.tolist()}) == 1000
    assert pretext.min_hamming_distance(perms) >= 5
    # The first 100 of the greedy sequence are the P = 100 set.
    np.testing.assert_array_equal(perms[:100], pretext.permutation_set(100))


def test_jigsaw_tiles_reassemble_under_inverse_permutation():
    size = 12  # cells of 4, tiles of 4: no gap
    image = jax.random.uniform(jax.random.PRNGKey(3), (2, size, size, 3))
    perms = pretext.permutation_set(10)
    views = functools.partial(
        pretext.jigsaw_views, size=size, tile=4, scale=(1.0, 1.0), jitter=False, standardize=False
    )
    tiles, labels = jax.jit(views)(jax.random.PRNGKey(4), image, perms)
    assert tiles.shape == (2, 9, 4, 4, 3) and labels.shape == (2,)
    shuffled = 0
    for b in range(2):
        perm = perms[int(labels[b])]
        inverse = np.argsort(perm)
        back = pretext.assemble_tiles(tiles[b][inverse])
        np.testing.assert_allclose(back, image[b], atol=1e-5)
        # In the order the model sees them, the tiles reassemble the image only when
        # the drawn permutation is the identity (the set may contain it).
        shown = np.asarray(pretext.assemble_tiles(tiles[b]))
        identity = np.array_equal(perm, np.arange(9))
        assert np.allclose(shown, np.asarray(image[b]), atol=1e-3) == identity, perm
        shuffled += not identity
    assert shuffled >= 1  # this key draws at least one real shuffle


def test_jigsaw_tiles_stay_in_their_cells_with_jitter():
    size, cell, tile = 15, 5, 3
    image = coords_image(size)
    tiles = pretext.grid_tiles(jax.random.PRNGKey(5), image, tile=tile, jitter=True)
    offsets = set()
    for i in range(9):
        top_left = int(tiles[i, 0, 0, 0])
        y, x = divmod(top_left, size)
        r, c = divmod(i, 3)
        assert r * cell <= y <= r * cell + cell - tile and c * cell <= x <= c * cell + cell - tile
        np.testing.assert_array_equal(tiles[i], image[y : y + tile, x : x + tile])
        offsets.add((y - r * cell, x - c * cell))
    assert len(offsets) > 1  # the jitter moves tiles


def test_jigsaw_labels_cover_permutations_and_tiles_standardised():
    images = jax.random.uniform(jax.random.PRNGKey(6), (256, 8, 8, 1))
    views = jax.jit(functools.partial(pretext.jigsaw_views, size=12, tile=3))
    tiles, labels = views(jax.random.PRNGKey(7), images, pretext.permutation_set(4))
    assert set(np.asarray(labels).tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(tiles.mean(axis=(2, 3, 4)), 0.0, atol=1e-4)


# ----------------------------------------------------------------------------- context


def test_context_pair_positions_match_labels():
    size, patch, gap = 16, 4, 2
    image = coords_image(size)
    for label, (dy, dx) in enumerate(pretext.CONTEXT_OFFSETS):
        centre, neighbour, corners = pretext.context_pair(
            jax.random.PRNGKey(label), image, label, patch=patch, gap=gap, jitter=0
        )
        cy, cx = divmod(int(centre[0, 0, 0]), size)
        ny, nx = divmod(int(neighbour[0, 0, 0]), size)
        assert (ny - cy, nx - cx) == (dy * (patch + gap), dx * (patch + gap))
        np.testing.assert_array_equal(corners, [[cy, cx], [ny, nx]])


def test_context_views_labels_with_jitter():
    size, patch, gap, jitter = 24, 5, 3, 1
    # Coordinates scaled into [0, 1] (the crop clips to that range).
    images = jnp.broadcast_to(coords_image(size) / size**2, (64, size, size, 1))
    views = functools.partial(
        pretext.context_views,
        size=size,
        patch=patch,
        gap=gap,
        jitter=jitter,
        scale=(1.0, 1.0),
        standardize=False,
    )
    pairs, labels = map(np.asarray, jax.jit(views)(jax.random.PRNGKey(8), images))
    assert pairs.shape == (64, 2, patch, patch, 1)
    assert len(set(np.asarray(labels).tolist())) == 8
    stride = patch + gap
    moved = False
    for b in range(64):
        cy, cx = divmod(int(round(float(pairs[b, 0, 0, 0, 0]) * size**2)), size)
        ny, nx = divmod(int(round(float(pairs[b, 1, 0, 0, 0]) * size**2)), size)
        dy, dx = ny - cy, nx - cx
        assert (round(dy / stride), round(dx / stride)) == pretext.CONTEXT_OFFSETS[int(labels[b])]
        assert abs(dy - round(dy / stride) * stride) <= 2 * jitter
        moved |= (dy, dx) != (round(dy / stride) * stride, round(dx / stride) * stride)
    assert moved


def test_colour_dropping_keeps_one_channel():
    patch = jax.random.uniform(jax.random.PRNGKey(9), (6, 6, 3))
    out = pretext.drop_colour(jax.random.PRNGKey(10), patch, p=1.0)
    kept = [c for c in range(3) if np.array_equal(out[..., c], patch[..., c])]
    assert len(kept) == 1
    for c in set(range(3)) - set(kept):
        assert float(jnp.std(out[..., c])) < 0.05 * float(jnp.std(patch[..., kept[0]]))
    gray = patch[..., :1]
    np.testing.assert_array_equal(pretext.drop_colour(jax.random.PRNGKey(0), gray, p=1.0), gray)


# ----------------------------------------------------------------------------- masks and noise


def test_center_mask_covers_configured_area():
    mask = pretext.block_mask(jax.random.PRNGKey(0), 16, 16, area=0.25, kind="center")
    assert mask.shape == (16, 16, 1) and mask.dtype == jnp.bool_
    assert int(mask.sum()) == 64
    np.testing.assert_array_equal(mask[4:12, 4:12], True)
    np.testing.assert_array_equal(mask, mask[::-1, ::-1])  # centred


def test_random_masks_cover_configured_area():
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    masks = jax.jit(jax.vmap(lambda k: pretext.block_mask(k, 16, 16, area=0.25, kind="random")))
    one = np.asarray(masks(keys))
    np.testing.assert_array_equal(one.sum(axis=(1, 2, 3)), 64)  # one 8x8 block
    assert len({int(np.argmax(np.asarray(m).ravel())) for m in one}) > 20  # random positions
    several = jax.jit(
        jax.vmap(lambda k: pretext.block_mask(k, 16, 16, area=0.25, kind="random", num_blocks=4))
    )(keys)
    cover = np.asarray(several.mean(axis=(1, 2, 3)))
    assert cover.max() <= 0.25 and cover.mean() > 0.18  # overlaps only ever reduce the area


def test_noise_statistics():
    image = jnp.full((64, 64, 3), 0.5)
    noisy = pretext.gaussian_noise(jax.random.PRNGKey(2), image, std=0.1)
    diff = np.asarray(noisy - image)
    assert abs(diff.mean()) < 0.005 and abs(diff.std() - 0.1) < 0.005
    assert float(pretext.gaussian_noise(jax.random.PRNGKey(3), image, std=2.0).max()) <= 1.0
    sp = np.asarray(pretext.salt_and_pepper(jax.random.PRNGKey(4), image, amount=0.2))
    hit = sp[..., 0] != 0.5
    assert abs(hit.mean() - 0.2) < 0.02
    assert abs((sp[..., 0][hit] == 1.0).mean() - 0.5) < 0.05
    np.testing.assert_array_equal(sp[..., 0], sp[..., 2])  # a pixel is hit in all channels


# ----------------------------------------------------------------------------- Lab


def lab_reference(rgb):
    """CIE 1976 L*a*b* (D65) in numpy from the standard's epsilon/kappa form."""
    rgb = np.asarray(rgb, np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def test_lab_golden_values():
    rgb = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lab = np.asarray(pretext.rgb_to_lab(rgb))
    # Published sRGB/D65 values (e.g. scikit-image's rgb2lab) to 4 significant digits; the
    # sRGB matrix rows sum to 0.950456 vs X_n = 0.95047, so white's a, b are ~5e-3, not 0.
    expected = [
        [100.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [53.2408, 80.0925, 67.2032],
        [32.2970, 79.1875, -107.8602],
    ]
    np.testing.assert_allclose(lab, expected, atol=1e-2)


def test_lab_matches_numpy_reference_and_round_trips():
    rgb = jax.random.uniform(jax.random.PRNGKey(5), (4096, 3))
    rgb = rgb.at[:16].set(jax.random.uniform(jax.random.PRNGKey(6), (16, 3)) * 0.03)  # dark: linear
    lab = jax.jit(pretext.rgb_to_lab)(rgb)
    np.testing.assert_allclose(lab, lab_reference(rgb), atol=5e-3)
    np.testing.assert_allclose(jax.jit(pretext.lab_to_rgb)(lab), rgb, atol=1e-4)
    gray = jnp.full((2, 2, 1), 0.3)
    np.testing.assert_allclose(pretext.rgb_to_lab(gray)[..., 1:], 0.0, atol=1e-2)


def test_lab_gradients_are_finite_at_the_edges():
    rgb = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.04045, 0.0, 1.0]])
    g = jax.grad(lambda x: jnp.sum(pretext.rgb_to_lab(x)))(rgb)
    assert np.isfinite(np.asarray(g)).all()


def test_ab_bins_and_soft_encoding():
    centres = pretext.ab_bins()
    assert 200 < len(centres) < 400 and centres.shape[1] == 2
    ab = jnp.array([[0.0, 0.0], [40.0, -30.0]])
    q = pretext.soft_encode_ab(ab, jnp.asarray(centres))
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
    nearest = centres[np.asarray(q.argmax(-1))]
    np.testing.assert_allclose(nearest, [[0, 0], [40, -30]])
    # A confident distribution decodes to its bin.
    logits = 50.0 * jax.nn.one_hot(q.argmax(-1), len(centres))
    np.testing.assert_allclose(
        pretext.annealed_mean_ab(logits, jnp.asarray(centres)), [[0, 0], [40, -30]], atol=1e-3
    )


@pytest.mark.parametrize("size", [8, 16])
def test_crop_flip_views_shape(size):
    images = jnp.zeros((3, 8, 8, 1), jnp.uint8)
    views = functools.partial(pretext.crop_flip_views, size=size, scale=(0.5, 1.0))
    out = jax.jit(views)(jax.random.PRNGKey(0), images)
    assert out.shape == (3, size, size, 1) and out.dtype == jnp.float32
