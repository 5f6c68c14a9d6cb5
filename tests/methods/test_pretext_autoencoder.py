"""Bottleneck autoencoders: top-k, quantisation, straight-through, dead codes, 8 == 1 device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.methods.autoencoder import dead_codes, debiased
from jssl.models import ConvNet, Decoder
from jssl.models.autoencoders import Autoencoder, quantize, top_k_mask
from tests.helpers import (
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_init,
    records,
    run_params,
    run_tier,
    slow_runs,
    smoke_args,
    tiny_config,
)

# sparse differs from lowdim only in the code layer, which the 8-device test runs.
# Learning rate 0.02 (x 32 / 256): four steps clearly lower the reconstruction error.
TRAIN_PY_RUNS = {
    b: smoke_args(
        "autoencoder", f"--config.autoencoder.bottleneck={b}", "--config.optim.learning_rate=0.02"
    )
    for b in ("lowdim", "vq")
}
SLOW_RUNS = slow_runs(*TRAIN_PY_RUNS)


def test_top_k_mask_keeps_k_largest_and_their_gradient():
    code = jnp.array([[0.1, 3.0, 2.0, 0.5], [4.0, 0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(top_k_mask(code, 2), [[0, 3, 2, 0], [4, 0, 0, 2]])
    g = jax.grad(lambda c: jnp.sum(top_k_mask(c, 2)))(code)
    np.testing.assert_array_equal(g, [[0, 1, 1, 0], [1, 0, 0, 1]])


def test_quantize_picks_nearest_code():
    codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    z = jnp.array([[[0.9, 0.8], [-1.5, 0.2]], [[0.1, -0.1], [5.0, 5.0]]])  # [2, 2, 2]
    z_q, idx = quantize(z, codebook)
    np.testing.assert_array_equal(idx, [[1, 2], [0, 1]])
    np.testing.assert_array_equal(z_q, codebook[idx])


def test_straight_through_passes_the_decoder_gradient_to_the_encoder():
    model = Autoencoder(
        backbone=ConvNet(widths=(4, 8)), decoder=Decoder(), bottleneck="vq", num_codes=8
    )
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
    variables = jit_init(model, x, train=False, seed=1)

    def recon_loss(params):
        recon, aux = model.apply({**variables, "params": params}, x, train=False)
        return jnp.mean(jnp.square(recon - x))

    g = jax.jit(jax.grad(recon_loss))(variables["params"])
    # The reconstruction alone moves the encoder (through z_e) but never the codebook.
    assert float(jnp.abs(g["to_code"]["kernel"]).sum()) > 0
    assert float(jnp.abs(g["codebook"]).sum()) == 0


def test_dead_codes_golden():
    usage = jnp.array([0.5, 0.499, 0.001, 0.0])  # K = 4: threshold 0.01 / 4 = 0.0025
    assert float(dead_codes(usage, threshold=0.01)) == 2.0
    # A zero-started EMA of a constant share, bias-corrected, is that share at every step.
    ema = jnp.zeros(2)
    for step in range(3):
        ema = 0.9 * ema + 0.1 * jnp.array([0.25, 0.75])
        np.testing.assert_allclose(debiased(ema, jnp.array(step), 0.9), [0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize(
    "bottleneck, sparsity",
    [("lowdim", "topk"), ("sparse", "topk"), ("sparse", "l1"), ("vq", "topk")],
)
def test_code_shapes(bottleneck, sparsity):
    model = Autoencoder(
        backbone=ConvNet(widths=(4, 8)),
        decoder=Decoder(),
        bottleneck=bottleneck,
        sparsity=sparsity,
        code_dim=6,
        sparse_dim=20,
        top_k=3,
        num_codes=8,
        code_channels=5,
    )
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 1))
    variables = jit_init(model, x, train=False, seed=1)
    recon, aux = model.apply(variables, x, train=False)
    assert recon.shape == x.shape and aux["features"].shape == (3, 8)
    code = aux["code"]
    if bottleneck == "lowdim":
        assert code.shape == (3, 6)
    elif bottleneck == "sparse":
        assert code.shape == (3, 20) and float(code.min()) >= 0
        if sparsity == "topk":
            assert int((code > 0).sum(axis=1).max()) <= 3
    else:
        assert code.shape == (3, 8, 8, 5) and aux["indices"].shape == (3, 8, 8)


def test_one_step_8_devices_equals_1_device_vq():
    config = tiny_config(
        "autoencoder",
        batch_size=16,
        **{
            "autoencoder.bottleneck": "vq",
            "autoencoder.num_codes": 16,
            "autoencoder.normalize_codes": True,
        },
    )
    metrics = assert_one_step_8_devices_equals_1(config).metrics
    assert 0 <= metrics["dead_codes"] <= 16 and metrics["perplexity"] >= 1


@run_tier("sparse")
def test_one_step_8_devices_equals_1_device_sparse():
    config = tiny_config(
        "autoencoder",
        batch_size=16,
        **{"autoencoder.bottleneck": "sparse", "autoencoder.sparsity": "l1"},
    )
    assert_one_step_8_devices_equals_1(config)


@pytest.mark.parametrize("bottleneck", run_params("lowdim", "vq"))
def test_train_py_smoke(train_py_runs, bottleneck):
    run = train_py_runs[bottleneck]
    assert_finished(run)
    train = records(run.workdir)
    assert bottleneck != "vq" or "dead_codes" in train[-1]
    # lr 1e-9: recon_mse ends at 0.99 (lowdim) and 0.95 (vq) times its first value, batch
    # to batch noise; here at 0.30 and 0.51 times.
    assert_fell(train, "recon_mse", ratio=0.75)
