"""Equivariance (+ SimCLR) and the VAE: views, losses, 8 == 1 device, smoke, pictures."""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from test_pretext_utils import assert_one_step_8_devices_equals_1, run_train_py_smokes, set_fields

from configs import equivariance as equivariance_config
from configs import vae as vae_config
from jssl import pretext, visualize
from jssl.methods import METHODS, vae
from jssl.methods.base import EncoderWithHead
from jssl.models import ConvNet, Decoder, MLPHead

TINY = {"model.kwargs.widths": (8, 16), "batch_size": 16, "eval.untrained": False}


def test_equivariance_views():
    config = set_fields(
        equivariance_config.get_config("digits,smoke"), **{"equivariance.transforms": "flips"}
    )
    images = jax.random.randint(jax.random.PRNGKey(0), (32, 8, 8, 1), 0, 255).astype(jnp.uint8)
    v1, v2, pv1, k = METHODS["equivariance"].make_views(
        jax.random.PRNGKey(1), {"image": images}, config
    )
    assert v1.shape == v2.shape == pv1.shape == (32, 16, 16, 1)
    assert set(np.asarray(k).tolist()) == {0, 4}
    for b in range(32):
        np.testing.assert_array_equal(pv1[b], pretext.dihedral(v1[b], int(k[b])))


class Identity(nn.Module):
    """A 'backbone' whose feature map is its input: exactly equivariant, not invariant."""

    @nn.compact
    def __call__(self, x, *, train):
        return jnp.mean(x, axis=(1, 2)), {"feature_map": x}


def test_equivariance_loss_is_zero_for_an_equivariant_map():
    config = equivariance_config.get_config("digits,smoke")
    model = EncoderWithHead(backbone=Identity(), head=MLPHead((), 4, use_bn=False))
    images = jax.random.randint(jax.random.PRNGKey(0), (8, 8, 8, 3), 0, 255).astype(jnp.uint8)
    views = METHODS["equivariance"].make_views(jax.random.PRNGKey(1), {"image": images}, config)
    params = model.init(jax.random.PRNGKey(2), views[0], train=False)["params"]
    loss_fn = METHODS["equivariance"].make_loss(model, config)
    _, (_, _, metrics) = loss_fn(params, {}, views, {}, 0, jax.random.PRNGKey(3))
    assert float(metrics["equivariance"]) < 1e-6
    assert float(metrics["equiv_identity"]) > 1e-3  # the map moves with the image


def test_vae_reparameterisation_and_decode():
    model = vae.VAE(backbone=ConvNet(widths=(4, 8)), decoder=Decoder(), latent_dim=3)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
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


def test_one_step_8_devices_equals_1_device():
    for cfg in (equivariance_config, vae_config):
        config = set_fields(cfg.get_config("digits,smoke"), **TINY)
        metrics = assert_one_step_8_devices_equals_1(config)
        assert np.isfinite(metrics["loss"])


def test_train_py_smoke_and_pictures(tmp_path):
    runs = [
        ("configs/equivariance.py:digits,smoke", str(tmp_path / "equivariance"), ()),
        ("configs/vae.py:digits,smoke", str(tmp_path / "vae"), ()),
    ]
    (equiv, _), (vae_train, _) = run_train_py_smokes(runs)
    assert "equivariance" in equiv[-1] and "neg_elbo_nats_per_dim" in vae_train[-1]
    out = str(tmp_path / "vae.png")
    args = ["reconstructions", "--workdir", str(tmp_path / "vae"), "--out", out, "--num", "6"]
    assert visualize.main(args) == 0
    # 4 rows (images, reconstructions, 2 rows of samples) of 6 16x16 images, 1-px gaps, x4.
    assert Image.open(out).size == (4 * (6 * 17 + 1), 4 * (4 * 17 + 1))
    assert visualize.main(["reconstructions", "--workdir", str(tmp_path / "nowhere")]) == 1
    assert os.path.exists(out)
