"""Pictures of trained networks.

    python -m jssl.visualize attention --workdir W --images 8 --out attention.png

    python -m jssl.visualize reconstructions --workdir W --out reconstructions.png

Both restore the latest checkpoint of a run (``jssl.experiment.restore_run``).
``attention`` needs a ViT backbone and writes DINO's picture: each row is one
test image followed by one map per head of the [CLS] token's self-attention
over the patches in the last block
(of the method's default network, ``Method.default_network``).
``reconstructions`` draws the rows a method supplies (``Method.picture_rows``): a
decoder's inputs and outputs (VAE samples from the prior too, MAE's visible patches
and predictions).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jssl import augment
from jssl.errors import UserError

__all__ = [
    "attention_grid",
    "attention_maps",
    "image_grid",
    "load_run",
    "main",
    "picture_rows",
    "save_attention_png",
    "save_reconstructions_png",
]


def load_run(workdir: str):
    """(experiment, state) of ``workdir``'s latest checkpoint, from its saved config.json."""
    from jssl.experiment import restore_run  # heavy: data, evaluation, methods

    run = restore_run(workdir)
    return run.experiment, run.state


def attention_maps(exp, state, images: np.ndarray, *, network: str | None = None) -> np.ndarray:
    """Last-block [CLS] attention over patches: images uint8 [N, H, W, C] -> [N, heads, gh, gw].

    The images are resized to the run's ``augment.crop_size`` as for evaluation.
    """
    config = exp.config
    if "vit" not in config.model.name:
        raise UserError(
            f"Attention maps need a ViT backbone; this run's model.name is {config.model.name!r}."
        )
    size = (config.augment.crop_size, config.augment.crop_size)
    from jssl.evaluation import network_variables

    network = network or exp.method.default_network
    variables = jax.device_get(network_variables(state, network, teacher=exp.method.teacher))

    @jax.jit
    def run(variables, images):
        x = augment.eval_view(images, size=size)
        _, aux = exp.model.apply(
            variables,
            x,
            method=lambda m, x: m.backbone(x, train=False, return_attention=True),
        )
        b, gh, gw, _ = aux["feature_map"].shape
        cls_to_patches = aux["attention"][:, :, 0, -gh * gw :]  # [N, heads, gh * gw]
        return cls_to_patches.reshape(b, -1, gh, gw)

    return np.asarray(run(variables, jnp.asarray(images)))


def attention_grid(
    images: np.ndarray, maps: np.ndarray, *, cell: int = 96, gap: int = 2
) -> np.ndarray:
    """Row n: image n, then its maps. images uint8 [N, H, W, C]; maps [N, heads, gh, gw].

    Returns uint8 [N * (cell + gap) + gap, (1 + heads) * (cell + gap) + gap, 3];
    maps are upsampled with nearest neighbours so each patch stays a square, and coloured
    with matplotlib's "inferno" colormap after min-max scaling per map.
    """
    from PIL import Image

    from jssl import plotting

    n, heads = maps.shape[:2]
    canvas = np.full((n * (cell + gap) + gap, (1 + heads) * (cell + gap) + gap, 3), 255, np.uint8)

    def put(row, col, rgb):
        tile = np.asarray(Image.fromarray(rgb).resize((cell, cell), Image.NEAREST))
        y, x = gap + row * (cell + gap), gap + col * (cell + gap)
        canvas[y : y + cell, x : x + cell] = tile

    for r in range(n):
        img = images[r]
        put(r, 0, np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img)
        for h in range(heads):
            put(r, 1 + h, plotting.colorize(maps[r, h]))
    return canvas


def save_attention_png(
    workdir: str, out: str, *, num_images: int = 8, network: str | None = None, cell: int = 96
) -> str:
    """Writes the attention grid of the first ``num_images`` test images; returns ``out``.
    ``network``: None for the method's default (``Method.default_network``)."""
    from PIL import Image

    exp, state = load_run(workdir)
    network = network or exp.method.default_network
    images = exp.dataset.test.get(np.arange(min(num_images, len(exp.dataset.test))))
    maps = attention_maps(exp, state, images, network=network)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(attention_grid(images, maps, cell=cell)).save(out)
    return out


def image_grid(rows: list[np.ndarray], *, gap: int = 1) -> np.ndarray:
    """Rows of float images [N, H, W, C] in [0, 1] -> one uint8 [R*(H+gap)+gap, ..., 3] picture."""
    n, h, w, _ = rows[0].shape
    grid = np.ones((len(rows) * (h + gap) + gap, n * (w + gap) + gap, 3), np.float32)
    for r, row in enumerate(rows):
        row = np.clip(np.asarray(row, np.float32), 0.0, 1.0)
        if row.shape[-1] == 1:
            row = np.repeat(row, 3, axis=-1)
        for i in range(n):
            y, x = gap + r * (h + gap), gap + i * (w + gap)
            grid[y : y + h, x : x + w] = row[i]
    return np.rint(grid * 255).astype(np.uint8)


def picture_rows(exp, state, *, num: int = 10, seed: int = 0) -> list[np.ndarray]:
    """The rows of the ``reconstructions`` picture of a trained method
    (``Method.picture_rows``: a decoder's inputs and outputs)."""
    from jssl.methods import METHODS

    config, model = exp.config, exp.model
    rows_of = exp.method.picture_rows
    if rows_of is None:
        drawn = ", ".join(sorted(name for name, m in METHODS.items() if m.picture_rows))
        raise UserError(f"No picture for method {config.method!r}; supported: {drawn}.")
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    size = config.augment.crop_size
    images = exp.dataset.test.get(np.arange(min(num, len(exp.dataset.test))))
    x = augment.eval_view(jnp.asarray(images), size=(size, size))
    return rows_of(model, variables, images, x, jax.random.PRNGKey(seed), config)


def save_reconstructions_png(workdir: str, out: str, *, num: int = 10, scale: int = 4) -> str:
    """Writes the ``reconstructions`` PNG of a run's latest checkpoint; returns its path."""
    from PIL import Image

    exp, state = load_run(workdir)
    grid = image_grid([np.asarray(r) for r in picture_rows(exp, state, num=num)])
    img = Image.fromarray(grid)
    img.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0, or 1 after one ``error:`` line on stderr for a user error
    (``--traceback`` or ``-v 1`` raises it instead, with its traceback)."""
    from jssl import cli

    parser = cli.ArgumentParser(prog="python -m jssl.visualize", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback", action="store_true", help="on an error, show the traceback (as -v 1)"
    )
    common.add_argument("-v", "--verbosity", type=int, default=0, help="1: as --traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    att = sub.add_parser(
        "attention", parents=[common], help="[CLS] attention maps of a ViT run's last block"
    )
    rec = sub.add_parser(
        "reconstructions",
        parents=[common],
        help="the rows a method draws (Method.picture_rows): a decoder's inputs and outputs",
    )
    for p, default in ((att, "attention.png"), (rec, "reconstructions.png")):
        p.add_argument("--workdir", required=True, help="run folder (config.json, checkpoints/)")
        p.add_argument("--out", default=None, help=f"PNG path (default: WORKDIR/{default})")
    att.add_argument("--images", type=int, default=8, help="number of test images (rows)")
    att.add_argument(
        "--network", choices=("teacher", "student"), default=None,
        help="default: the teacher when the method evaluates one (DINO), else the student",
    )  # fmt: skip
    att.add_argument("--cell", type=int, default=96, help="pixels per picture cell")
    rec.add_argument("--num", type=int, default=10, help="images per row")
    rec.add_argument("--scale", type=int, default=4, help="pixel magnification")
    args = parser.parse_args(argv)
    try:
        from jssl import validation

        validation.validate_saved_run(args.workdir)  # every problem before anything is loaded
        out = args.out or os.path.join(args.workdir, f"{args.command}.png")
        if args.command == "reconstructions":
            path = save_reconstructions_png(args.workdir, out, num=args.num, scale=args.scale)
        else:
            path = save_attention_png(
                args.workdir, out, num_images=args.images, network=args.network, cell=args.cell
            )
    except cli.user_error_types() as e:
        if args.traceback or args.verbosity >= 1:
            raise
        cli.print_error(e)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
