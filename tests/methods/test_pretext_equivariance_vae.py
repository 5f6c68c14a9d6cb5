"""Equivariance (+ SimCLR) and the VAE: views, losses, 8 == 1 device, smoke, pictures."""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import equivariance as equivariance_config
from jssl import pretext, visualize
from jssl.methods import METHODS, vae
from jssl.models import ConvNet, Decoder, EncoderWithHead, MLPHead
from tests.helpers import (
    ONE_STAGE,
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_init,
    jit_views,
    records,
    run_params,
    run_tier,
    set_fields,
    slow_runs,
    smoke_args,
    tiny_config,
)

# Higher learning rates (x 32 / 256), and eight steps for the contrastive loss (NT-Xent
# over 32 pairs moves by about 0.1 from batch to batch), so that both visibly learn.
TRAIN_PY_RUNS = {
    "equivariance": smoke_args(
        "equivariance",
        "--config.num_steps=8",
        "--config.log_every=4",
        "--config.checkpoint_every=4",
        "--config.optim.learning_rate=0.05",
    ),
    "vae": smoke_args("vae", "--config.optim.learning_rate=0.02"),
}
SLOW_RUNS = slow_runs(*TRAIN_PY_RUNS)


def test_equivariance_views():
    config = set_fields(
        equivariance_config.get_config("digits,smoke"), **{"equivariance.transforms": "flips"}
    )
    images = jax.random.randint(jax.random.PRNGKey(0), (32, 8, 8, 1), 0, 255).astype(jnp.uint8)
    views = jit_views("equivariance", config)(jax.random.PRNGKey(1), {"image": images})
    v1, v2, pv1, k = (np.asarray(v) for v in views)
    assert v1.shape == v2.shape == pv1.shape == (32, 16, 16, 1)
    assert set(k.tolist()) == {0, 4}
    # The jitted program may compute v1 again inside the flip's fusion, in another order:
    # float32 rounding of pixels in [0, 1] (7e-8 without YNNPACK fusions).
    for b in range(32):
        np.testing.assert_allclose(pv1[b], pretext.dihedral(v1[b], int(k[b])), atol=1e-6)


class Identity(nn.Module):
    """A 'backbone' whose feature map is its input: exactly equivariant, not invariant."""

    @nn.compact
    def __call__(self, x, *, train):
        return jnp.mean(x, axis=(1, 2)), {"feature_map": x}


def test_equivariance_loss_is_zero_for_an_equivariant_map():
    config = equivariance_config.get_config("digits,smoke")
    model = EncoderWithHead(backbone=Identity(), head=MLPHead((), 4, use_bn=False))
    images = jax.random.randint(jax.random.PRNGKey(0), (8, 8, 8, 3), 0, 255).astype(jnp.uint8)
    views = jit_views("equivariance", config)(jax.random.PRNGKey(1), {"image": images})
    params = jit_init(model, views[0], train=False)["params"]
    loss_fn = jax.jit(METHODS["equivariance"].make_loss(model, config), static_argnums=4)
    _, (_, _, metrics) = loss_fn(params, {}, views, {}, 0, jax.random.PRNGKey(3))
    assert float(metrics["equivariance"]) < 1e-6
    assert float(metrics["equiv_identity"]) > 1e-3  # the map moves with the image


def test_vae_reparameterisation_and_decode():
    model = vae.VAE(backbone=ConvNet(widths=(4, 8)), decoder=Decoder(), latent_dim=3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1))
    variables = jit_init(model, x, train=False, seed=1)
    recon, aux = model.apply(variables, x, train=False)
    assert recon.shape == x.shape and aux["mean"].shape == (2, 3)
    np.testing.assert_array_equal(aux["z"], aux["mean"])  # no eps: the posterior mean
    eps = jnp.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    _, aux = model.apply(variables, x, train=False, eps=eps)
    np.testing.assert_allclose(
        aux["z"], aux["mean"] + jnp.exp(0.5 * aux["log_var"]) * eps, rtol=1e-6
    )
    samples = model.apply(
        variables, jnp.zeros((5, 3)), out_shape=(16, 16, 1), train=False, method=vae.VAE.decode
    )
    assert samples.shape == (5, 16, 16, 1)


def test_elbo_terms_golden():
    x = jnp.zeros((2, 2, 2, 1))
    mean = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    t = vae.elbo_terms(x, jnp.zeros_like(x), jnp.zeros(()), mean, jnp.zeros((2, 2)))
    nll = 4 * 0.5 * math.log(2 * math.pi)  # 4 pixels, each 0.5 ln(2 pi) at the mean
    np.testing.assert_allclose(t["nll"], [nll, nll], rtol=1e-6)
    np.testing.assert_allclose(t["kl"], [0.0, 0.5], atol=1e-7)  # 0.5 * mean^2
    np.testing.assert_allclose(t["neg_elbo_per_dim"], [nll / 4, (nll + 0.5) / 4], rtol=1e-6)


def test_image_grid_layout():
    rows = [np.zeros((3, 4, 4, 1)), np.ones((3, 4, 4, 3))]
    grid = visualize.image_grid(rows, gap=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[6, 1, 0] == 255 and grid[0, 0, 0] == 255


@pytest.mark.parametrize("name", run_params("equivariance", "vae"))
def test_one_step_8_devices_equals_1_device(name):
    metrics = assert_one_step_8_devices_equals_1(
        tiny_config(name, batch_size=16, **ONE_STAGE)
    ).metrics
    assert np.isfinite(metrics["loss"])


@run_tier("equivariance", "vae")
def test_train_py_smoke_and_pictures(train_py_runs, tmp_path):
    equivariance, vae_run = train_py_runs["equivariance"], train_py_runs["vae"]
    assert_finished(equivariance)
    assert_finished(vae_run)
    equiv, vae_train = records(equivariance.workdir), records(vae_run.workdir)
    assert "equivariance" in equiv[-1]
    # lr 1e-9: the loss falls by 0.07 (batch to batch) and the negative ELBO ends at 0.995
    # times its first value; here they fall by 0.35 and to 0.63 times.
    assert_fell(equiv, "loss", by=0.15)
    assert_fell(vae_train, "neg_elbo_nats_per_dim", ratio=0.75)
    out = str(tmp_path / "vae.png")
    args = ["reconstructions", "--workdir", vae_run.workdir, "--out", out, "--num", "6"]
    assert visualize.main(args) == 0
    # 4 rows (images, reconstructions, 2 rows of samples) of 6 16x16 images, 1-px gaps, x4.
    assert Image.open(out).size == (4 * (6 * 17 + 1), 4 * (4 * 17 + 1))
    assert visualize.main(["reconstructions", "--workdir", str(tmp_path / "nowhere")]) == 1
    assert os.path.exists(out)
