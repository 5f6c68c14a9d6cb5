"""View makers for the pretext tasks: rotations, the dihedral group, jigsaw tiles and
permutation sets, context patches, block masks, noise, and RGB <-> CIE Lab.

Conventions are those of :mod:`jssl.augment`: a random op takes ONE image
``[H, W, C]`` float32 in ``[0, 1]`` and its own key; a batch policy ``vmap``s it
over per-example keys split from the step key, so an example's views depend only
on its own key (the same on 1 or 8 devices). Sizes and probabilities are static.
The only host-side function is :func:`permutation_set` (a deterministic numpy
search, run once when the model is built).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jssl import augment

Array = jax.Array

# ----------------------------------------------------------------------------
# A light training view (random resized crop + optional flip)


def crop_flip_view(
    key: Array,
    image: Array,
    *,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    flip: bool = True,
) -> Array:
    """Random resized crop to ``[size, size, C]`` and a horizontal flip with p=0.5.

    image: one ``[H, W, C]`` uint8 or float in [0, 1]; returns float32 in [0, 1].
    The pretext tasks bring their own corruption, so no colour jitter here.
    """
    k_crop, k_flip = jax.random.split(key)
    x = augment.random_resized_crop(k_crop, augment.to_float(image), size=size, scale=scale)
    return augment.random_flip(k_flip, x) if flip else x


def crop_flip_views(key: Array, images: Array, **kwargs) -> Array:
    """:func:`crop_flip_view` of every image: ``[B, H, W, C]`` -> ``[B, size, size, C]``."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(crop_flip_view, **kwargs))(keys, images)


# ----------------------------------------------------------------------------
# Rotations and the dihedral group D4


def rotate90(image: Array, k: int) -> Array:
    """Rotates ``[..., H, W, C]`` counter-clockwise (as displayed) by ``k * 90`` degrees.

    ``k`` is a static int; see :func:`dihedral` for a traced transform index.
    """
    return jnp.rot90(image, k % 4, axes=(-3, -2))


def all_rotations(images: Array) -> tuple[Array, Array]:
    """Every image at 0, 90, 180 and 270 degrees, example-major.

    Args:
      images: ``[B, S, S, C]`` (square).

    Returns:
      (rotated ``[4B, S, S, C]``, labels ``[4B]`` int32) with row ``4b + k`` image
      b rotated by k * 90 degrees. Example-major order keeps the four copies of an
      example on the device that holds the example.
    """
    if images.shape[-3] != images.shape[-2]:
        raise ValueError(f"rotations need square images, got {images.shape[-3:-1]}")
    b = images.shape[0]
    rotated = jnp.stack([rotate90(images, k) for k in range(4)], axis=1)  # [B, 4, S, S, C]
    labels = jnp.tile(jnp.arange(4, dtype=jnp.int32), b)
    return rotated.reshape(4 * b, *images.shape[1:]), labels


def dihedral(x: Array, k: Array | int) -> Array:
    """Element k (0..7) of the dihedral group D4 applied to a square ``[S, S, C]`` array.

    k < 4: rotation by k * 90 degrees; k >= 4: horizontal flip, then rotation by
    (k - 4) * 90 degrees. ``k`` may be traced (a ``lax.switch``; under ``vmap``
    all 8 branches run, which is cheap for the small maps used here). Works on
    images and on feature maps alike, which is what equivariance needs.
    """
    if x.shape[0] != x.shape[1]:
        raise ValueError(f"dihedral transforms need a square [S, S, C] array, got {x.shape}")
    branches = [functools.partial(_dihedral_static, k=i) for i in range(8)]
    if isinstance(k, int):
        return branches[k % 8](x)
    return jax.lax.switch(k, branches, x)


def _dihedral_static(x: Array, *, k: int) -> Array:
    if k >= 4:
        x = x[:, ::-1]
    return jnp.rot90(x, k % 4, axes=(0, 1))


def dihedral_inverse(k: int) -> int:
    """Index of the inverse of D4 element k."""
    return (4 - k) % 4 if k < 4 else k  # reflections are their own inverse


# ----------------------------------------------------------------------------
# Jigsaw (Noroozi & Favaro 2016)


@functools.lru_cache(maxsize=8)
def _permutation_set_cached(num_permutations: int, num_tiles: int, seed: int) -> np.ndarray:
    if math.factorial(num_tiles) > 5_000_000:
        raise ValueError(f"num_tiles={num_tiles} has too many permutations to search.")
    if not 1 <= num_permutations <= math.factorial(num_tiles):
        raise ValueError(
            f"num_permutations must be in [1, {math.factorial(num_tiles)}], got {num_permutations}"
        )
    candidates = np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)
    n = len(candidates)
    # equal[i, v] = 1 where candidates have tile v at position i: the Hamming
    # distance of every candidate to permutation p is then num_tiles minus a sum
    # of num_tiles gathered uint8 rows (~50x faster than comparing [n, T] arrays).
    equal = np.stack(
        [np.stack([candidates[:, i] == v for v in range(num_tiles)]) for i in range(num_tiles)]
    ).astype(np.uint8)
    positions = np.arange(num_tiles)
    # Running minimum and sum of the Hamming distances of every candidate to the set.
    min_dist = np.full(n, num_tiles, np.int32)
    sum_dist = np.zeros(n, np.int32)
    tie_scale = num_tiles * num_permutations + 1  # sum_dist < tie_scale
    chosen = np.empty(num_permutations, np.int64)
    j = int(np.random.default_rng(seed).integers(n))
    for i in range(num_permutations):
        chosen[i] = j
        d = num_tiles - equal[positions, candidates[j]].sum(0, dtype=np.int32)
        np.minimum(min_dist, d, out=min_dist)
        sum_dist += d
        # Maximise the minimum distance; break ties by the largest summed distance
        # (Noroozi's mean-distance criterion), then by index. Chosen ones have 0.
        j = int(np.argmax(min_dist * tie_scale + sum_dist))
    out = candidates[chosen].astype(np.int32)
    out.flags.writeable = False
    return out


def permutation_set(
    num_permutations: int = 100, *, num_tiles: int = 9, seed: int = 0
) -> np.ndarray:
    """P permutations of ``num_tiles`` chosen greedily for a large minimum Hamming distance.

    Starting from a seeded random permutation, each step adds the permutation
    whose minimum Hamming distance to those already chosen is largest (ties:
    the largest summed distance, then the lowest lexicographic index). Exact
    greedy search over all 9! = 362,880 candidates; deterministic for a seed;
    P = 1000 takes a few seconds and the result is cached per process.

    Returns:
      int32 ``[P, num_tiles]`` (read-only); row p lists, for each output
      position, the grid index of the tile shown there.
    """
    return _permutation_set_cached(int(num_permutations), int(num_tiles), int(seed))


def min_hamming_distance(perms: np.ndarray) -> int:
    """Smallest Hamming distance between two distinct rows of ``perms`` [P, T]."""
    perms = np.asarray(perms)
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(d, perms.shape[1] + 1)
    return int(d.min())


def grid_tiles(
    key: Array,
    image: Array,
    *,
    grid: int = 3,
    tile: int,
    jitter: bool = True,
) -> Array:
    """Cuts a ``grid x grid`` set of tiles from ``image`` [S, S, C] (row-major grid order).

    The image is split into cells of side ``S // grid``; from each cell a
    ``tile x tile`` square is taken at a uniformly random offset (``jitter``)
    or centred, so neighbouring tiles are separated by a random gap of
    ``cell - tile`` pixels on average and edges cannot simply be matched.

    Returns:
      ``[grid * grid, tile, tile, C]``.
    """
    cell = image.shape[0] // grid
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"jigsaw needs a square image, got {image.shape[:2]}")
    if not 1 <= tile <= cell:
        raise ValueError(
            f"tile={tile} must be in [1, cell={cell}] (image {image.shape[0]}, grid {grid})"
        )
    n = grid * grid
    slack = cell - tile
    if jitter and slack > 0:
        offsets = jax.random.randint(key, (n, 2), 0, slack + 1)
    else:
        offsets = jnp.full((n, 2), slack // 2, jnp.int32)
    corners = jnp.array([(r * cell, c * cell) for r in range(grid) for c in range(grid)], jnp.int32)
    starts = corners + offsets
    c = image.shape[-1]
    return jax.vmap(lambda s: jax.lax.dynamic_slice(image, (s[0], s[1], 0), (tile, tile, c)))(
        starts
    )


def assemble_tiles(tiles: Array, grid: int = 3) -> Array:
    """Inverse of the gap-free jigsaw cut: ``[grid*grid, t, t, C]`` -> ``[grid*t, grid*t, C]``."""
    n, t, _, c = tiles.shape
    if n != grid * grid:
        raise ValueError(f"expected {grid * grid} tiles, got {n}")
    return (
        tiles.reshape(grid, grid, t, t, c).transpose(0, 2, 1, 3, 4).reshape(grid * t, grid * t, c)
    )


def standardize_tile(tile: Array, eps: float = 1e-3) -> Array:
    """Per-tile zero mean and unit std over all pixels and channels (Noroozi: no
    shortcut through the tiles' global brightness/contrast)."""
    mean = jnp.mean(tile)
    std = jnp.std(tile)
    return (tile - mean) / jnp.maximum(std, eps)


def jigsaw_views(
    key: Array,
    images: Array,
    permutations: Array,
    *,
    size: int,
    tile: int,
    grid: int = 3,
    scale: tuple[float, float] = (0.6, 1.0),
    jitter: bool = True,
    gray_p: float = 0.0,
    standardize: bool = True,
) -> tuple[Array, Array]:
    """Shuffled tiles and their permutation labels for a batch.

    Per example: a random resized crop to ``[size, size, C]`` (``scale``), random
    grayscale with ``gray_p`` (against chromatic shortcuts), the tile cut of
    :func:`grid_tiles`, a label uniform in ``[0, P)``, and the tiles reordered
    so output position i shows grid tile ``permutations[label, i]``.

    Args:
      images: ``[B, H, W, C]`` uint8 or float.
      permutations: ``[P, grid*grid]`` int.

    Returns:
      (tiles ``[B, grid*grid, tile, tile, C]`` float32, labels ``[B]`` int32).
    """
    permutations = jnp.asarray(permutations, jnp.int32)

    def one(k, image):
        k_crop, k_gray, k_tiles, k_label = jax.random.split(k, 4)
        x = augment.random_resized_crop(k_crop, augment.to_float(image), size=size, scale=scale)
        x = augment.random_grayscale(k_gray, x, p=gray_p)
        tiles = grid_tiles(k_tiles, x, grid=grid, tile=tile, jitter=jitter)
        label = jax.random.randint(k_label, (), 0, permutations.shape[0])
        tiles = tiles[permutations[label]]
        if standardize:
            tiles = jax.vmap(standardize_tile)(tiles)
        return tiles, label

    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(one)(keys, images)


# ----------------------------------------------------------------------------
# Context prediction (Doersch et al. 2015)

# Label -> (dy, dx) of the neighbour relative to the centre, in patch strides,
# row-major over the 3x3 grid without its centre.
CONTEXT_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def context_span(patch: int, gap: int, jitter: int) -> int:
    """Smallest image side that holds the 3x3 patch layout with its gaps and jitter."""
    return 3 * patch + 2 * gap + 2 * jitter


def context_pair(
    key: Array, image: Array, label: Array | int, *, patch: int, gap: int, jitter: int
) -> tuple[Array, Array, Array]:
    """The centre patch and neighbour ``label`` (see CONTEXT_OFFSETS) of ``image`` [S, S, C].

    The 3x3 layout (patches ``patch`` apart by ``gap``) sits at a random place
    in the image; each of the two patches moves independently by up to
    ``jitter`` pixels in y and x.

    Returns:
      (centre ``[patch, patch, C]``, neighbour ``[patch, patch, C]``, the two
      top-left corners ``[2, 2]`` int32 (centre, neighbour) for tests).
    """
    s = image.shape[0]
    span = context_span(patch, gap, jitter)
    if min(image.shape[:2]) < span:
        raise ValueError(
            f"context patches need an image of at least {span} px "
            f"(3*patch + 2*gap + 2*jitter); got {image.shape[:2]}"
        )
    k_pos, k_jit = jax.random.split(key)
    origin = jax.random.randint(k_pos, (2,), 0, s - span + 1) + jitter  # top-left patch corner
    stride = patch + gap
    offsets = jnp.array(CONTEXT_OFFSETS, jnp.int32)[label]
    centre = origin + stride
    neighbour = centre + offsets * stride
    if jitter > 0:
        jit = jax.random.randint(k_jit, (2, 2), -jitter, jitter + 1)
    else:
        jit = jnp.zeros((2, 2), jnp.int32)
    corners = jnp.stack([centre, neighbour]) + jit
    c = image.shape[-1]
    cut = lambda yx: jax.lax.dynamic_slice(image, (yx[0], yx[1], 0), (patch, patch, c))
    return cut(corners[0]), cut(corners[1]), corners


def drop_colour(key: Array, patch: Array, *, p: float, noise_ratio: float = 0.01) -> Array:
    """Doersch's colour dropping on ``[h, w, 3]``: with probability p keep one random
    channel and replace the other two by Gaussian noise of std ``noise_ratio`` x the
    kept channel's std. A no-op for C = 1."""
    if patch.shape[-1] == 1 or p <= 0:
        return patch
    k_apply, k_keep, k_noise = jax.random.split(key, 3)
    keep = jax.random.randint(k_keep, (), 0, 3)
    kept = patch[..., keep]
    noise = jax.random.normal(k_noise, patch.shape) * (noise_ratio * jnp.std(kept))
    noise = noise + jnp.mean(kept)
    dropped = jnp.where(jnp.arange(3) == keep, patch, noise)
    return jnp.where(jax.random.uniform(k_apply) < p, dropped, patch)


def context_views(
    key: Array,
    images: Array,
    *,
    size: int,
    patch: int,
    gap: int,
    jitter: int,
    scale: tuple[float, float] = (0.6, 1.0),
    colour_drop_p: float = 0.0,
    gray_p: float = 0.0,
    standardize: bool = True,
) -> tuple[Array, Array]:
    """(centre, neighbour) patch pairs and their 8-way position labels for a batch.

    Per example: a random resized crop to ``[size, size, C]``, a label uniform in
    [0, 8), the patch pair of :func:`context_pair`, then per patch colour
    dropping (``colour_drop_p``), random grayscale (``gray_p``) and per-patch
    standardisation.

    Returns:
      (pairs ``[B, 2, patch, patch, C]`` float32 (centre first), labels ``[B]`` int32).
    """

    def one(k, image):
        k_crop, k_label, k_pair, k_drop, k_gray = jax.random.split(k, 5)
        x = augment.random_resized_crop(k_crop, augment.to_float(image), size=size, scale=scale)
        label = jax.random.randint(k_label, (), 0, 8)
        centre, neighbour, _ = context_pair(k_pair, x, label, patch=patch, gap=gap, jitter=jitter)
        pair = jnp.stack([centre, neighbour])
        pair = jax.vmap(functools.partial(drop_colour, p=colour_drop_p))(
            jax.random.split(k_drop, 2), pair
        )
        pair = jax.vmap(functools.partial(augment.random_grayscale, p=gray_p))(
            jax.random.split(k_gray, 2), pair
        )
        if standardize:
            pair = jax.vmap(standardize_tile)(pair)
        return pair, label

    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(one)(keys, images)


# ----------------------------------------------------------------------------
# Masks (inpainting)


def block_mask(
    key: Array,
    height: int,
    width: int,
    *,
    area: float = 0.25,
    kind: str = "center",
    num_blocks: int = 1,
) -> Array:
    """Boolean mask ``[H, W, 1]``, True where pixels are hidden.

    kind "center": one centred block of ``round(sqrt(area) * H) x round(sqrt(area) * W)``
    pixels (Pathak's central region). kind "random": ``num_blocks`` blocks, each of
    ``area / num_blocks`` of the image, at uniform random positions (they may
    overlap, so the covered fraction is at most ``area``; exactly ``area`` up to
    rounding for one block).
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"mask area must be in (0, 1), got {area}")
    ys = jnp.arange(height)[:, None]
    xs = jnp.arange(width)[None, :]
    if kind == "center":
        bh, bw = round(math.sqrt(area) * height), round(math.sqrt(area) * width)
        y0, x0 = (height - bh) // 2, (width - bw) // 2
        mask = (ys >= y0) & (ys < y0 + bh) & (xs >= x0) & (xs < x0 + bw)
        return mask[..., None]
    if kind != "random":
        raise ValueError(f"Unknown mask kind {kind!r}; valid: 'center', 'random'.")
    frac = math.sqrt(area / num_blocks)
    bh, bw = max(1, round(frac * height)), max(1, round(frac * width))
    k_y, k_x = jax.random.split(key)
    y0 = jax.random.randint(k_y, (num_blocks, 1, 1), 0, height - bh + 1)
    x0 = jax.random.randint(k_x, (num_blocks, 1, 1), 0, width - bw + 1)
    blocks = (ys >= y0) & (ys < y0 + bh) & (xs >= x0) & (xs < x0 + bw)
    return jnp.any(blocks, axis=0)[..., None]


# ----------------------------------------------------------------------------
# Noise (denoising)


def gaussian_noise(key: Array, image: Array, *, std: float, clip: bool = True) -> Array:
    """image + N(0, std^2) per pixel and channel, clipped to [0, 1] when ``clip``."""
    x = image + std * jax.random.normal(key, image.shape, jnp.float32)
    return jnp.clip(x, 0.0, 1.0) if clip else x


def salt_and_pepper(key: Array, image: Array, *, amount: float) -> Array:
    """A fraction ``amount`` of the pixels (all channels together) set to 0 or 1, half each."""
    k_hit, k_salt = jax.random.split(key)
    shape = image.shape[:-1] + (1,)
    hit = jax.random.uniform(k_hit, shape) < amount
    salt = jax.random.uniform(k_salt, shape) < 0.5
    return jnp.where(hit, salt.astype(image.dtype), image)


# ----------------------------------------------------------------------------
# Colour: sRGB <-> CIE Lab (D65), on device

# sRGB (linear) -> XYZ for the D65 white point, and the D65 white.
_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_D65 = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def _srgb_to_linear(c: Array) -> Array:
    safe = jnp.maximum(c, 0.04045)  # keeps the unused branch's gradient finite
    return jnp.where(c > 0.04045, ((safe + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c: Array) -> Array:
    safe = jnp.maximum(c, 0.0031308)
    return jnp.where(c > 0.0031308, 1.055 * safe ** (1 / 2.4) - 0.055, 12.92 * c)


def _lab_f(t: Array) -> Array:
    safe = jnp.maximum(t, _DELTA**3)
    return jnp.where(t > _DELTA**3, jnp.cbrt(safe), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _lab_f_inv(f: Array) -> Array:
    return jnp.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))


def rgb_to_lab(rgb: Array) -> Array:
    """sRGB ``[..., 3]`` in [0, 1] -> CIE Lab (D65): L in [0, 100], a and b about [-128, 127].

    The CIE formula with the sRGB companding and matrix (the constants scikit-image
    uses). A ``[..., 1]`` grayscale input is treated as R = G = B.
    """
    if rgb.shape[-1] == 1:
        rgb = jnp.broadcast_to(rgb, rgb.shape[:-1] + (3,))
    lin = _srgb_to_linear(rgb.astype(jnp.float32))
    xyz = lin @ jnp.asarray(_RGB_TO_XYZ.T / _D65[None, :], jnp.float32)  # white-normalised
    fx, fy, fz = (_lab_f(xyz[..., i]) for i in range(3))
    return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: Array, *, clip: bool = True) -> Array:
    """CIE Lab (D65) ``[..., 3]`` -> sRGB ``[..., 3]``, clipped to [0, 1] when ``clip``."""
    lab = lab.astype(jnp.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = jnp.stack([_lab_f_inv(fx), _lab_f_inv(fy), _lab_f_inv(fz)], axis=-1)
    lin = xyz @ jnp.asarray((_XYZ_TO_RGB * _D65[None, :]).T, jnp.float32)
    rgb = _linear_to_srgb(lin)
    return jnp.clip(rgb, 0.0, 1.0) if clip else rgb


# ----------------------------------------------------------------------------
# Quantised ab (Zhang et al. 2016)


@functools.lru_cache(maxsize=4)
def ab_bins(grid: int = 10, *, samples_per_axis: int = 64) -> np.ndarray:
    """Centres ``[Q, 2]`` of the ``grid``-spaced ab bins that sRGB colours reach.

    Zhang et al. keep the 313 in-gamut bins of a 10-spaced grid; this counts a bin
    as in gamut when one of ``samples_per_axis**3`` RGB colours (all L) falls in it
    (computed with numpy once; Q is about 260-320 depending on sampling).
    """
    v = np.linspace(0.0, 1.0, samples_per_axis)
    rgb = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 3)
    lab = np.asarray(rgb_to_lab(jnp.asarray(rgb, jnp.float32)))
    idx = np.unique(np.round(lab[:, 1:] / grid).astype(np.int64), axis=0)
    centres = (idx * grid).astype(np.float32)
    centres.flags.writeable = False
    return centres


def soft_encode_ab(ab: Array, centres: Array, *, neighbours: int = 5, sigma: float = 5.0) -> Array:
    """Soft targets over ab bins: Gaussian weights (``sigma``) on the ``neighbours``
    nearest bin centres, normalised. ab ``[..., 2]`` -> ``[..., Q]``."""
    d2 = jnp.sum(jnp.square(ab[..., None, :] - centres), axis=-1)  # [..., Q]
    neg, idx = jax.lax.top_k(-d2, neighbours)
    w = jax.nn.softmax(neg / (2 * sigma**2), axis=-1)
    onehots = jax.nn.one_hot(idx, centres.shape[0], dtype=jnp.float32)  # [..., n, Q]
    return jnp.einsum("...n,...nq->...q", w, onehots)


def annealed_mean_ab(logits: Array, centres: Array, *, temperature: float = 0.38) -> Array:
    """Zhang's decoding of bin logits ``[..., Q]`` to ab ``[..., 2]``: the mean of the
    distribution sharpened with ``temperature`` (0.38 in the paper)."""
    return jax.nn.softmax(logits / temperature, axis=-1) @ centres
