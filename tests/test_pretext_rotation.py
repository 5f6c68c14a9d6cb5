"""Rotation prediction: heads, views, one step on 8 devices == 1 device, train.py smoke."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pretext_utils import assert_one_step_8_devices_equals_1, run_train_py_smokes, set_fields

from configs import rotation as rotation_config
from jssl.methods import METHODS
from jssl.models import ConvNet, TransformClassifier, create_model

TINY = {"model.kwargs.widths": (8, 16), "batch_size": 16, "eval.untrained": False}


@pytest.mark.parametrize(
    "head, backbone",
    [("spatial", "convnet"), ("attention", "convnet"), ("gap", "convnet"), ("spatial", "resnet")],
)
def test_heads_shapes(head, backbone):
    if backbone == "convnet":
        net = ConvNet(widths=(8, 16))
    else:
        net = create_model("resnet18", width=4, stage_sizes=(1, 1), stem="cifar")
    model = TransformClassifier(backbone=net, head=head)
    x = jnp.zeros((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    logits, aux = model.apply(variables, x, train=False)
    assert logits.shape == (2, 4) and aux["features"].ndim == 2
    if head == "gap":  # the GAP head sees only the pooled features
        assert variables["params"]["Dense_0"]["kernel"].shape[0] == aux["features"].shape[1]


def test_gap_head_cannot_see_layout_but_spatial_can():
    """Moving the feature map's content around changes the spatial head, not the GAP head."""

    class Fixed(ConvNet):
        def __call__(self, x, *, train):
            fmap = x  # the "backbone" is the identity on a [B, h, w, C] map
            return jnp.mean(fmap, axis=(1, 2)), {"feature_map": fmap}

    fmap = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 4, 3))
    moved = jnp.roll(fmap, 1, axis=1)
    for head, should_change in (("gap", False), ("spatial", True), ("attention", True)):
        model = TransformClassifier(backbone=Fixed(), head=head)
        variables = model.init(jax.random.PRNGKey(2), fmap, train=False)
        a = model.apply(variables, fmap, train=False)[0]
        b = model.apply(variables, moved, train=False)[0]
        assert (not np.allclose(a, b, atol=1e-6)) == should_change, head


def test_unknown_head_is_named():
    model = TransformClassifier(backbone=ConvNet(widths=(4,)), head="pooled")
    with pytest.raises(ValueError, match="spatial, attention, gap"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)


def test_views_hold_all_four_rotations_of_each_example():
    config = rotation_config.get_config("digits,smoke")
    images = jax.random.randint(jax.random.PRNGKey(0), (4, 8, 8, 1), 0, 255).astype(jnp.uint8)
    x, labels = METHODS["rotation"].make_views(jax.random.PRNGKey(1), {"image": images}, config)
    assert x.shape == (16, 16, 16, 1)
    np.testing.assert_array_equal(labels, np.tile(np.arange(4), 4))
    for b in range(4):
        for k in range(4):
            np.testing.assert_array_equal(x[4 * b + k], jnp.rot90(x[4 * b], k, axes=(0, 1)))


def test_one_step_8_devices_equals_1_device():
    config = set_fields(rotation_config.get_config("digits,smoke"), **TINY)
    metrics = assert_one_step_8_devices_equals_1(config)
    assert 0.0 <= metrics["rotation_acc"] <= 1.0


def test_train_py_smoke(tmp_path):
    # The default spatial head runs in the 8-device test; the smoke run takes the GAP head.
    ((train, _),) = run_train_py_smokes(
        [("configs/rotation.py:digits,smoke", str(tmp_path), ("--config.rotation.head=gap",))]
    )
    assert "rotation_acc" in train[-1]
