"""MAE: masking (exact ratio, independent per image, none at evaluation), the encoder sees
only the visible patches, fixed sine-cosine positions as MAE's, jit == no jit, 8 devices ==
1, train.py smoke run that learns, exact resume, the reconstruction picture, the presets."""

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mae as mae_config
from jssl import losses, trainer
from jssl.checkpoint import Checkpointer
from jssl.evaluation import predict
from jssl.methods import METHODS, mae
from jssl.models.vit import sincos_pos_embed
from tests.helpers import (
    RESUMES_IN_DEFAULT_TIER,
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_init,
    jit_views,
    leaves_equal,
    records,
    run_tier,
    set_fields,
    smoke_args,
)

# 8 px crops in 2 px patches: 16 patches, 4 visible at 75%. (The helpers' TINY sets ConvNet
# widths, which a ViT does not take.)
TINY_VIT = {
    "augment.crop_size": 8,
    "model.kwargs.patch_size": 2,
    "model.kwargs.image_size": 8,
    "eval.probe_epochs": 2,
    "eval.untrained": False,
}
# The smoke preset's 4 steps barely move the loss: 24 steps at an unscaled lr 3e-3, logged
# every 4 steps, a checkpoint every 4 kept (step 4 is the resume test's uninterrupted run).
LONGER = {
    "num_steps": 24,
    "log_every": 4,
    "checkpoint_every": 4,
    "keep_checkpoints": 6,
    "optim.scale_lr_by_batch": False,
    "optim.learning_rate": 3e-3,
}
TRAIN_PY_RUNS = {
    "mae": smoke_args(
        "mae", *(f"--config.{k}={v}".replace(" ", "") for k, v in {**TINY_VIT, **LONGER}.items())
    )
}


def tiny(**overrides):
    return set_fields(mae_config.get_config("digits,smoke"), **{**TINY_VIT, **overrides})


def _parts(config, batch=4, seed=0):
    model = METHODS["mae"].build_model(config)
    s = config.augment.crop_size
    x = jax.random.uniform(jax.random.PRNGKey(seed), (batch, s, s, 1))
    return model, jit_init(model, x, train=False), x


# ----------------------------------------------------------------------------- masking


def test_random_masking_keeps_exactly_the_share_and_is_a_permutation():
    for num, ratio in ((16, 0.75), (49, 0.75), (10, 0.5), (7, 0.9)):
        m = jax.device_get(mae.random_masking(jax.random.PRNGKey(1), 6, num, ratio))
        kept = int(num * (1 - ratio))  # MAE's len_keep
        assert m["keep"].shape == (6, kept) and m["restore"].shape == m["mask"].shape == (6, num)
        np.testing.assert_array_equal(m["mask"].sum(axis=1), num - kept)
        for b in range(6):
            assert sorted(m["restore"][b]) == list(range(num))
            np.testing.assert_array_equal(m["mask"][b, m["keep"][b]], 0.0)
            # restore puts patch l at its place in [kept..., masked...]
            np.testing.assert_array_equal(m["restore"][b, m["keep"][b]], np.arange(kept))


def test_masks_are_independent_across_images():
    """Each patch is masked in 3/4 of the images, and two images share as many masked
    patches as two independent draws do (12 * 12 / 16 = 9 on average), not all 12."""
    n, num = 2000, 16
    m = np.asarray(mae.random_masking(jax.random.PRNGKey(0), n, num, 0.75)["mask"])
    np.testing.assert_allclose(m.mean(axis=0), 0.75, atol=0.04)
    overlap = (m[:-1] * m[1:]).sum(axis=1)
    np.testing.assert_allclose(overlap.mean(), 9.0, atol=0.1)
    # hypergeometric variance: 12 * (12/16) * (4/16) * (4/15) = 0.6
    np.testing.assert_allclose(overlap.var(), 0.6, rtol=0.15)
    # an image's mask comes from its own key: the same key gives the same mask
    again = np.asarray(mae.random_masking(jax.random.PRNGKey(0), n, num, 0.75)["mask"])
    np.testing.assert_array_equal(m, again)
    other = np.asarray(mae.random_masking(jax.random.PRNGKey(1), n, num, 0.75)["mask"])
    assert (m != other).any(axis=1).mean() > 0.99


def test_views_mask_every_image_at_the_configured_ratio():
    config = tiny(**{"mae.mask_ratio": 0.5})
    images = jnp.asarray(np.random.RandomState(0).randint(0, 255, (5, 8, 8, 1)), jnp.uint8)
    views = jax.jit(lambda k, b: mae.make_views(k, b, config))(
        jax.random.PRNGKey(3), {"image": images, "index": jnp.arange(5)}
    )
    assert views["image"].shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(np.asarray(views["mask"]).sum(axis=1), 8)  # 16 patches


# ----------------------------------------------------------------------------- the model


def test_sincos_position_embeddings_match_mae():
    """MAE's get_2d_sincos_pos_embed (util/pos_embed.py), written out in numpy."""

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    dim, size = 16, 3
    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    grid = np.stack(grid, axis=0)  # MAE: meshgrid(grid_w, grid_h), w goes first
    expected = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    np.testing.assert_allclose(sincos_pos_embed(dim, (size, size))[0], expected, atol=1e-6)


def test_evaluation_features_are_the_unmasked_encoder():
    """No masking at evaluation: the features evaluation reads are the ViT's [CLS] on every
    patch, identical to keeping every patch in order, and deterministic."""
    config = tiny()
    model, variables, x = _parts(config)
    assert set(variables["params"]) == {"backbone", "decoder"}
    assert "pos_embed" not in variables["params"]["backbone"]  # fixed sine-cosine positions
    feats = predict.features(model, variables, x)
    backbone = model.backbone
    alone, _ = backbone.apply({"params": variables["params"]["backbone"]}, x, train=False)
    np.testing.assert_array_equal(feats, alone)
    np.testing.assert_array_equal(feats, predict.features(model, variables, x))
    every = jnp.broadcast_to(jnp.arange(16), (4, 16))
    _, aux = model.apply(variables, x, train=False, keep=every, restore=every)
    np.testing.assert_allclose(aux["features"], feats, atol=1e-5)


def test_encoder_sees_only_the_visible_patches():
    """Changing the pixels of masked patches changes neither the encoder's [CLS] nor the
    prediction; changing one visible patch changes both."""
    config = tiny()
    model, variables, x = _parts(config)
    m = mae.random_masking(jax.random.PRNGKey(2), 4, 16, 0.75)
    run = jax.jit(
        lambda x: model.apply(variables, x, train=False, keep=m["keep"], restore=m["restore"])
    )
    pred, aux = run(x)
    assert pred.shape == (4, 16, 4)  # 2 x 2 x 1 pixels per patch
    noise = jax.random.uniform(jax.random.PRNGKey(5), x.shape)
    mask_px = mae.unpatchify(jnp.broadcast_to(m["mask"][..., None], (4, 16, 4)), 2, (4, 4))
    pred2, aux2 = run(jnp.where(mask_px > 0, noise, x))
    np.testing.assert_array_equal(pred2, pred)
    np.testing.assert_array_equal(aux2["features"], aux["features"])
    pred3, aux3 = run(jnp.where(mask_px > 0, x, noise))
    assert not np.allclose(aux3["features"], aux["features"])
    assert not np.allclose(pred3, pred)


def test_unpatchify_inverts_patchify():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 12, 3))
    np.testing.assert_array_equal(mae.unpatchify(losses.patchify(x, 4), 4, (2, 3)), x)


def test_loss_jit_equals_no_jit_and_gradients_reach_encoder_and_decoder():
    config = tiny()
    model, variables, x = _parts(config, batch=2)
    images = jnp.asarray(np.random.RandomState(0).randint(0, 255, (2, 8, 8, 1)), jnp.uint8)
    views = jit_views("mae", config)(jax.random.PRNGKey(0), {"image": images})
    loss_fn = mae.make_loss(model, config)

    def loss(params):
        return loss_fn(params, {}, views, {}, 0, None)[0]

    with jax.disable_jit():
        eager = loss(variables["params"])
    jitted = jax.jit(loss)(variables["params"])
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    grads = jax.jit(jax.grad(loss))(variables["params"])
    for part in ("backbone", "decoder"):
        assert any(np.any(g) for g in jax.tree.leaves(grads[part])), part


def test_one_step_8_devices_equals_1():
    metrics = assert_one_step_8_devices_equals_1(tiny()).metrics
    np.testing.assert_allclose(metrics["mask_ratio"], 0.75)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("preset", ["digits", "cifar10", "cifar10_folder", "stl10", "imagenet"])
def test_presets(preset):
    from jssl import validation

    c = importlib.import_module("configs.mae").get_config(preset)
    if c.data.name in ("image_folder", "arrayrecord"):  # folder presets: a path is given
        c.data.path = "/data"
    assert c.method == "mae" and c.mae.mask_ratio == 0.75 and c.mae.norm_pix
    assert c.model.kwargs.pos_embedding == "sincos" and c.optim.name == "adamw"
    assert c.optim.b2 == 0.95 and c.optim.weight_decay == 0.05
    assert validation.config_problems(c) == []
    if preset == "imagenet":  # MAE ViT-B/16, decoder 512-d x 8 blocks x 16 heads
        assert (c.model.name, c.model.kwargs.patch_size) == ("vit_base", 16)
        assert (c.mae.decoder_hidden, c.mae.decoder_depth, c.mae.decoder_num_heads) == (512, 8, 16)
        assert (c.batch_size, c.num_epochs, c.optim.warmup_epochs) == (4096, 800.0, 40.0)
        assert c.optim.learning_rate == 1.5e-4 and tuple(c.augment.scale) == (0.2, 1.0)


# ----------------------------------------------------------------------------- train.py


def test_train_py_smoke_learns(train_py_runs):
    run = train_py_runs["mae"]
    result = assert_finished(run)
    assert all(np.isfinite(result[k]) for k in ("knn_top1", "linear_top1", "nmi"))
    train = records(run.workdir)
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    assert all(r["mask_ratio"] == 0.75 for r in train)
    # About 2.2 (the first 4 steps' mean: an untrained decoder's outputs are far from the
    # normalised patches) -> 0.65 at step 24 on this machine.
    assert_fell(train, ratio=0.5)


@run_tier("mae", tier=RESUMES_IN_DEFAULT_TIER)
def test_exact_resume(train_py_runs, tmp_path):
    """Interrupted at step 2 and resumed to step 4 == the uninterrupted run's step 4."""
    run = train_py_runs["mae"]
    assert run.returncode == 0, run.stderr[-3000:]
    config = tiny(**LONGER)
    workdir = str(tmp_path)
    first = trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at_step=2)
    assert int(first["state"].step) == 2
    resumed = trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at_step=4)
    ckpt = Checkpointer(run.workdir)
    try:
        straight = ckpt.restore(resumed["state"], step=4)
    finally:
        ckpt.close()
    leaves_equal(straight, resumed["state"])


@pytest.mark.slow
def test_reconstruction_picture(train_py_runs, tmp_path):
    from PIL import Image

    from jssl import visualize

    run = train_py_runs["mae"]
    assert run.returncode == 0, run.stderr[-3000:]
    out = str(tmp_path / "mae.png")
    assert visualize.main(["reconstructions", "--workdir", run.workdir, "--out", out]) == 0
    assert os.path.getsize(out) > 0
    # 4 rows (image, visible patches, prediction, pasted) of 10 images of 8 px, 1 px gaps, x4
    assert Image.open(out).size == ((10 * 9 + 1) * 4, (4 * 9 + 1) * 4)
    exp, state = visualize.load_run(run.workdir)
    rows = visualize.picture_rows(exp, state, num=3)
    image, visible, _, pasted = (np.asarray(r) for r in rows)
    shown = visible != 0.5  # grey = masked (a digit pixel of exactly 0.5 would be ambiguous)
    np.testing.assert_allclose(pasted[shown], image[shown], atol=1e-6)
    np.testing.assert_allclose(visible[shown], image[shown], atol=1e-6)
    assert (~shown).mean() > 0.5  # 12 of 16 patches masked
