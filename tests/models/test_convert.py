"""Checkpoints in and out (jssl.models.convert, jssl.export, --config.init_from.weights).

Without torch: exact round trips jssl -> torchvision/timm layout -> jssl (in memory and
through .safetensors files), one-line errors for missing, extra and mis-shaped tensors and
for unknown layouts, prefixes of SSL checkpoints, folded input normalisation, and a trained
run exported and evaluated again through ``train.py --mode=eval``.

With torch and torchvision (skipped cleanly without them): randomly initialised torchvision
ResNet-18/50 and a ViT-B/16 (timm's when timm is installed, and a reference written from the
timm/DINO layout), every parameter and BatchNorm statistic perturbed, ported to jssl give
PyTorch's features within 1e-4 relative; jssl's export loads into torchvision with a strict
``load_state_dict``; ``.pth`` files are read with ``weights_only=True``.
"""

import argparse
import importlib.util
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import save_file

from jssl import validation
from jssl.experiment import restore_run
from jssl.models import ResNet, convert, create_model
from jssl.models.convert import ConversionError
from tests.helpers import jit_init

try:
    import torch
    import torchvision
except ImportError:
    torch = torchvision = None
try:
    import timm
except ImportError:
    timm = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch and torchvision")
MEAN, STD = convert.INPUT_NORMS["imagenet"]


def perturbed(variables, seed: int = 0) -> dict:
    """Every parameter and BatchNorm statistic moved away from its initial value (numpy)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, a in flatten_dict(jax.device_get(dict(variables))).items():
        a = np.asarray(a, np.float32)
        if key[-1] == "var":
            out[key] = rng.uniform(0.5, 2.0, a.shape).astype(np.float32)
        elif key[-1] == "scale":
            out[key] = (1.0 + 0.2 * rng.standard_normal(a.shape)).astype(np.float32)
        else:
            scale = 0.1 * max(float(a.std()), 0.1) if a.size > 1 else 0.1
            out[key] = (a + scale * rng.standard_normal(a.shape)).astype(np.float32)
    return unflatten_dict(out)


def backbone(name: str, size: int, seed: int = 0, **kwargs):
    """(model, perturbed variables) of the jssl backbone ``name``."""
    model = create_model(name, **kwargs)
    variables = jit_init(model, jnp.zeros((1, size, size, 3)), train=False)
    return model, perturbed(variables, seed)


def features(model, variables, x: np.ndarray) -> np.ndarray:
    """Eval-mode pooled features of images x [B, H, W, C]."""
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, x))


def assert_trees_equal(a, b):
    fa, fb = flatten_dict(dict(a)), flatten_dict(dict(b))
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


# ----------------------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def resnet18():
    return backbone("resnet18", 32, stem="imagenet")


@pytest.fixture(scope="module")
def vit():
    return backbone("vit_small", 32, patch_size=8, image_size=32)


def test_resnet_round_trip_is_exact_with_torchvision_names(resnet18):
    _, v = resnet18
    sd = convert.to_torch(v)
    # torchvision's resnet18 state dict has 122 entries: these 120 and fc.weight, fc.bias.
    assert len(sd) == 120
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.bn2.running_var"].shape == (512,)
    assert sd["layer3.0.bn1.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(
        sd["layer1.1.conv2.weight"],
        v["params"]["stage1_block2"]["Conv_1"]["kernel"].transpose(3, 2, 0, 1),
    )
    np.testing.assert_array_equal(sd["bn1.running_mean"], v["batch_stats"]["stem_bn"]["mean"])
    assert all(a.flags.c_contiguous for a in sd.values())
    assert_trees_equal(convert.from_torch(sd, v), v)


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_deeper_resnets_round_trip_exactly(name):
    model = create_model(name, stem="imagenet")
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    rng = np.random.default_rng(1)
    v = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    sd = convert.to_torch(v)
    # torchvision: resnet34 218, resnet50 320 entries, fc.weight and fc.bias included.
    assert len(sd) == {"resnet34": 216, "resnet50": 318}[name]
    if name == "resnet50":
        assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
        assert sd["layer4.2.bn3.running_mean"].shape == (2048,)
    assert_trees_equal(convert.from_torch(sd, v), v)


def test_vit_round_trip_is_exact_with_timm_names(vit):
    _, v = vit
    sd = convert.to_torch(v)
    assert len(sd) == 4 + 12 * 12 + 2  # patch embed, tokens, 12 blocks of 12 tensors, norm
    assert sd["patch_embed.proj.weight"].shape == (384, 3, 8, 8)
    assert sd["pos_embed"].shape == (1, 1 + 16, 384)
    assert sd["blocks.11.attn.qkv.weight"].shape == (3 * 384, 384)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (1536, 384)
    np.testing.assert_array_equal(
        sd["blocks.3.attn.proj.weight"], v["params"]["block4"]["attn"]["proj"]["kernel"].T
    )
    assert_trees_equal(convert.from_torch(sd, v), v)


def test_round_trip_through_a_safetensors_file_with_prefix_and_heads(tmp_path, resnet18):
    _, v = resnet18
    sd = {f"module.backbone.{k}": a for k, a in convert.to_torch(v).items()}
    sd["module.backbone.fc.weight"] = np.ones((10, 512), np.float32)  # classifier: skipped
    sd["module.projector.0.weight"] = np.ones((8, 512), np.float32)  # outside the prefix
    path = str(tmp_path / "w.safetensors")
    save_file(sd, path)
    loaded = convert.load_backbone(path, v, input_norm="none")
    assert_trees_equal(loaded, v)


def test_bfloat16_and_float16_safetensors_read_as_float32(tmp_path):
    a = np.array([0.5, -2.0, 3.0, 1.0], np.float32)
    bf16 = (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # these values are exact
    f16 = a.astype(np.float16).tobytes()
    header = {
        "x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
        "y": {"dtype": "F16", "shape": [2, 2], "data_offsets": [8, 16]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "half.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bf16 + f16)
    flat, _ = convert.read_checkpoint(str(path))
    assert flat["x"].dtype == np.float32 and flat["y"].dtype == np.float32
    np.testing.assert_array_equal(flat["x"], a)
    np.testing.assert_array_equal(flat["y"], a.reshape(2, 2))


# ----------------------------------------------------------------------------- errors


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConversionError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_missing_extra_and_mis_shaped_tensors_are_named(resnet18):
    _, v = resnet18
    sd = convert.to_torch(v)
    missing = {k: a for k, a in sd.items() if k != "layer3.1.bn2.running_var"}
    msg = one_line_error(convert.from_torch, missing, v, source="w.pth")
    assert "w.pth has no tensor 'layer3.1.bn2.running_var' that the model needs" in msg
    extra = {**sd, "layer1.0.conv9.weight": np.zeros((64, 64, 3, 3), np.float32)}
    msg = one_line_error(convert.from_torch, extra, v)
    assert "has tensor 'layer1.0.conv9.weight' that the model has no place for" in msg
    bad = {**sd, "layer2.0.conv1.weight": np.zeros((128, 64, 1, 1), np.float32)}
    msg = one_line_error(convert.from_torch, bad, v)
    assert (
        "tensor 'layer2.0.conv1.weight' has shape (128, 64, 1, 1), the model needs (128, 64, 3, 3)"
        in msg
    )
    assert "--config.model.name" in msg


def test_another_architecture_is_described_in_the_error(resnet18):
    _, v18 = resnet18
    model = create_model("resnet50", stem="imagenet")
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    sd50 = convert.to_torch(jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes))
    msg = one_line_error(convert.from_torch, sd50, v18)
    assert "the file holds a ResNet with blocks (3, 4, 6, 3), bottleneck blocks" in msg
    assert "the model is a ResNet with blocks (2, 2, 2, 2), basic blocks, a 7x7 stem" in msg


def test_vit_position_grid_mismatch_names_the_image_size(vit):
    _, v = vit
    sd = convert.to_torch(v)
    sd["pos_embed"] = np.zeros((1, 197, 384), np.float32)  # a 224 / 16 grid
    msg = one_line_error(convert.from_torch, sd, v)
    assert "tensor 'pos_embed' has shape (1, 197, 384), the model needs (1, 17, 384)" in msg
    assert "a 14x14 position grid (image_size" in msg


def test_unknown_layout_lists_the_top_level_names(tmp_path, resnet18, vit):
    _, v = resnet18
    path = str(tmp_path / "other.safetensors")
    save_file(
        {"model.encoder.weight": np.zeros(3, np.float32), "optimizer.lr": np.zeros(1, np.float32)},
        path,
    )
    msg = one_line_error(convert.load_backbone, path, v)
    assert "holds no torchvision ResNet weights" in msg
    assert "its top-level names: 'model', 'optimizer' (2 tensors)" in msg
    vit_path = str(tmp_path / "vit.safetensors")
    save_file(convert.to_torch(vit[1]), vit_path)
    msg = one_line_error(convert.load_backbone, vit_path, v)
    assert "it holds a timm/DINO ViT, not a torchvision ResNet" in msg


def test_a_file_with_student_and_teacher_needs_a_prefix(tmp_path, resnet18):
    _, v = resnet18
    _, other = backbone("resnet18", 32, seed=5, stem="imagenet")
    flat = {f"teacher.backbone.{k}": a for k, a in convert.to_torch(v).items()}
    flat.update({f"student.module.backbone.{k}": a for k, a in convert.to_torch(other).items()})
    flat["teacher.head.mlp.0.weight"] = np.zeros((4, 512), np.float32)
    path = str(tmp_path / "dino.safetensors")
    save_file(flat, path)
    msg = one_line_error(convert.load_backbone, path, v)
    assert "holds 2 torchvision ResNet backbones, under 'student.module.backbone.', " in msg
    assert "--config.init_from.prefix" in msg
    assert_trees_equal(convert.load_backbone(path, v, prefix="teacher", input_norm="none"), v)
    assert_trees_equal(convert.load_backbone(path, v, prefix="student", input_norm="none"), other)
    # A part of the prefix at a name boundary: "module.backbone" is the student's only.
    assert_trees_equal(
        convert.load_backbone(path, v, prefix="module.backbone", input_norm="none"), other
    )
    assert "holds 2" in one_line_error(convert.load_backbone, path, v, prefix="backbone")
    msg = one_line_error(convert.load_backbone, path, v, prefix="module.encoder_q")
    assert "no torchvision ResNet backbone under a prefix with 'module.encoder_q'" in msg


def test_bad_files_are_one_line_errors(tmp_path, resnet18, monkeypatch):
    _, v = resnet18
    msg = one_line_error(convert.load_backbone, str(tmp_path / "none.safetensors"), v)
    assert "does not exist" in msg
    (tmp_path / "w.npz").write_bytes(b"x")
    assert "unknown file type '.npz'" in one_line_error(
        convert.load_backbone, str(tmp_path / "w.npz"), v
    )
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 5)
    msg = one_line_error(convert.load_backbone, str(tmp_path / "broken.safetensors"), v)
    assert "cannot read" in msg and "as a safetensors file" in msg
    (tmp_path / "w.pth").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    msg = one_line_error(convert.load_backbone, str(tmp_path / "w.pth"), v)
    assert "is a PyTorch pickle: reading it needs torch" in msg and "safetensors" in msg
    assert "input_norm='bgr'" in one_line_error(convert.load_backbone, "x", v, input_norm="bgr")


# ----------------------------------------------------------------------------- normalisation


def test_folded_normalisation_is_exact_for_the_vit(vit):
    model, v = vit
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    folded = convert.fold_input_norm(v, MEAN, STD)
    ours = features(model, folded, x)
    theirs = features(model, v, (x - np.array(MEAN)) / np.array(STD))
    assert relative_error(ours, theirs) < 1e-5


def test_folded_normalisation_of_a_resnet_stem_is_exact_inside_the_padding_border():
    model = ResNet(stage_sizes=(), stem="cifar", width=8)  # the stem alone: 3x3 conv, BN, ReLU
    v = perturbed(jit_init(model, jnp.zeros((1, 12, 12, 3)), train=False))
    x = np.random.default_rng(0).uniform(size=(2, 12, 12, 3)).astype(np.float32)
    folded = convert.fold_input_norm(v, MEAN, STD)
    fmap = jax.jit(lambda v, x: model.apply(v, x, train=False)[1]["feature_map"])
    ours = np.asarray(fmap(folded, x))
    theirs = np.asarray(fmap(v, (x - np.array(MEAN)) / np.array(STD)))
    np.testing.assert_allclose(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(ours[:, 0], theirs[:, 0], atol=1e-3)  # the zero-padded border


def test_auto_normalisation_folds_imagenet_except_for_jssl_exports(tmp_path, vit):
    _, v = vit
    plain, exported = str(tmp_path / "plain.safetensors"), str(tmp_path / "jssl.safetensors")
    save_file(convert.to_torch(v), plain)
    save_file(convert.to_torch(v), exported, metadata={convert.INPUT_METADATA_KEY: "x"})
    assert_trees_equal(convert.load_backbone(exported, v), v)
    folded, expected = convert.load_backbone(plain, v), convert.fold_input_norm(v, MEAN, STD)
    assert jax.tree.structure(folded) == jax.tree.structure(expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), folded, expected
    )
    assert not np.allclose(
        folded["params"]["patch_embed"]["bias"], v["params"]["patch_embed"]["bias"]
    )


# ----------------------------------------------------------------------------- train.py, export


CONFIG_FILE = """
import ml_collections
from configs import simclr


def get_config(arg=None):
    c = simclr.get_config("digits,smoke")
    c.model.name = "resnet18"
    c.model.kwargs = ml_collections.ConfigDict(
        {"stem": "cifar", "width": 8, "stage_sizes": (1, 1, 1, 1), "conv_impl": "xla"}
    )
    c.augment.crop_size = 8
    c.eval.probe_epochs = 2
    c.eval.untrained = False
    return c
"""


@pytest.mark.slow
def test_export_and_evaluate_the_weights_through_train_py(tmp_path, train_py):
    """A trained run exported with python -m jssl.export and evaluated from that file with
    train.py --mode=eval --config.init_from.weights gives the run's own evaluation."""
    from jssl import export, trainer

    config_path = tmp_path / "resnet_digits.py"
    config_path.write_text(CONFIG_FILE)
    spec = importlib.util.spec_from_file_location("resnet_digits", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_dir, eval_dir, out = tmp_path / "run", tmp_path / "eval", str(tmp_path / "r.safetensors")
    trained = trainer.train_and_evaluate(module.get_config(), str(run_dir), show_progress=False)
    assert export.main(["--workdir", str(run_dir), "--out", out, "--layout", "torchvision"]) == 0
    loaded = convert.load_backbone(
        out,
        {
            "params": trained["state"].params["backbone"],
            "batch_stats": trained["state"].batch_stats["backbone"],
        },
    )
    assert_trees_equal(
        loaded,
        jax.device_get(
            {
                "params": trained["state"].params["backbone"],
                "batch_stats": trained["state"].batch_stats["backbone"],
            }
        ),
    )
    done = train_py(
        f"--config={config_path}",
        "--mode=eval",
        f"--workdir={eval_dir}",
        f"--config.init_from.weights={out}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kNN top-1" in done.stdout
    result = json.loads((eval_dir / "eval_0.json").read_text())
    for key in ("knn_top1", "linear_top1", "cluster_acc", "nmi", "ari"):
        assert result[key] == pytest.approx(trained["eval"][key], abs=1e-6), key
    assert export.main(["--workdir", str(run_dir), "--out", out, "--layout", "timm"]) == 1
    # A run whose config starts from a weights file reopens from its checkpoint alone.
    config = module.get_config()
    config.init_from.weights = out
    os.remove(out)
    restored = restore_run(str(run_dir), config=config)
    assert_trees_equal(restored.state.params, jax.device_get(trained["state"].params))


def test_weights_that_do_not_fit_are_one_error_line_through_train_py(tmp_path, train_py, vit):
    config_path = tmp_path / "resnet_digits.py"
    config_path.write_text(CONFIG_FILE)
    vit_file = str(tmp_path / "vit.safetensors")
    save_file(convert.to_torch(vit[1]), vit_file)
    cases = {
        "a ViT for a ResNet": (
            vit_file,
            ["holds no torchvision ResNet weights", "it holds a timm"],
        ),
        "no file": (str(tmp_path / "nothing.pth"), ["init_from.weights=", "no such file"]),
    }
    procs = {
        name: train_py.start(
            f"--config={config_path}",
            "--mode=eval",
            f"--workdir={tmp_path / name.replace(' ', '_')}",
            f"--config.init_from.weights={weights}",
        )
        for name, (weights, _) in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 1 and len(errors) == 1, (name, err[-3000:])
        assert "Traceback" not in err, (name, err[-3000:])
        for part in cases[name][1]:
            assert part in errors[0], (name, errors[0])
        assert not (tmp_path / name.replace(" ", "_") / "eval_0.json").exists()


def test_weights_are_checked_with_the_config(tmp_path):
    from tests.helpers import tiny_config

    config = tiny_config("simclr")
    config.init_from.weights = str(tmp_path / "missing.safetensors")
    found = validation.problems(config, str(tmp_path / "out"), mode="eval")
    assert any("init_from.weights=" in p and "no such file" in p for p in found), found
    assert not any("No checkpoint" in p for p in found), found  # eval of a file needs none
    (tmp_path / "w.safetensors").write_bytes(b"")
    config.init_from.weights = str(tmp_path / "w.safetensors")
    config.init_from.workdir = str(tmp_path)
    config.init_from.input_norm = "bgr"
    found = validation.problems(config, str(tmp_path / "out"), mode="eval")
    assert any("not both" in p for p in found), found
    assert any("init_from.input_norm='bgr'" in p for p in found), found


# ----------------------------------------------------------------------------- with torch


def _perturb_torch(net, seed: int = 0):
    """Every parameter and BatchNorm statistic of a torch module moved off its default."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif name.endswith(".weight") and t.ndim == 1:  # BatchNorm / LayerNorm scale
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                scale = 0.1 * max(float(t.std()) if t.numel() > 1 else 0.0, 0.1)
                t.add_(scale * torch.randn(t.shape, generator=g))
    return net.eval()


def _numpy_state_dict(net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


@needs_torch
@pytest.mark.parametrize("name,size", [("resnet18", 224), ("resnet50", 224)])
def test_torchvision_resnet_features_match(name, size):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)()
    net.fc = torch.nn.Identity()
    _perturb_torch(net)
    x = np.random.default_rng(0).uniform(size=(2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    model = create_model(name, stem="imagenet")
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False)
    )
    variables = convert.from_torch(_numpy_state_dict(net), target)
    ours = features(model, variables, x.transpose(0, 2, 3, 1))
    err = relative_error(ours, theirs)
    print(f"{name} torchvision -> jssl: max relative error {err:.2e}")
    assert err < 1e-4


@needs_torch
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folded_resnet_on_unit_rgb_is_close_to_torchvision_on_normalised_input(name):
    """The stem's zero padding is the one difference (README: input normalisation)."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)()
    net.fc = torch.nn.Identity()
    _perturb_torch(net)
    x = np.random.default_rng(0).uniform(size=(4, 224, 224, 3)).astype(np.float32)
    normalised = ((x - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())).numpy()
    model = create_model(name, stem="imagenet")
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False)
    )
    folded = convert.fold_input_norm(convert.from_torch(_numpy_state_dict(net), target), MEAN, STD)
    ours = features(model, folded, x)
    cosine = (
        np.sum(ours * theirs, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    )
    err = relative_error(ours, theirs)
    print(
        f"{name} folded, [0, 1] input: max relative error {err:.2e}, min cosine {cosine.min():.6f}"
    )
    assert cosine.min() > 0.999 and err < 0.05


@needs_torch
def test_export_loads_into_torchvision_strictly(tmp_path, resnet18):
    from safetensors.torch import load_file

    model, v = resnet18
    path = str(tmp_path / "r18.safetensors")
    save_file(convert.to_torch(v), path)
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(load_file(path), strict=True)
    x = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    err = relative_error(features(model, v, x), theirs)
    print(f"resnet18 jssl -> torchvision: max relative error {err:.2e}")
    assert err < 1e-4


class _Block(torch.nn.Module if torch else object):
    """A pre-LN block in the timm / official DINO layout (names and the fused qkv)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(dim, eps=1e-6)
        self.attn = torch.nn.Module()
        self.attn.qkv = torch.nn.Linear(dim, 3 * dim)
        self.attn.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim, eps=1e-6)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = torch.nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(dim=-1)
        x = x + self.attn.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class _ReferenceViT(torch.nn.Module if torch else object):
    """DINO's vision_transformer.VisionTransformer (no head), written from its layout."""

    def __init__(self, patch=16, dim=768, depth=12, heads=12, image=224):
        super().__init__()
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + (image // patch) ** 2, dim))
        self.blocks = torch.nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


@needs_torch
@pytest.mark.parametrize("reference", ["timm", "written"])
def test_vit_b16_features_match(reference):
    torch.manual_seed(0)
    if reference == "timm":
        if timm is None:
            pytest.skip("timm is not installed")
        net = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    else:
        net = _ReferenceViT()
    _perturb_torch(net, seed=3)
    x = np.random.default_rng(0).uniform(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    model = create_model("vit_base", patch_size=16, image_size=224)
    target = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False)
    )
    variables = convert.from_torch(_numpy_state_dict(net), target)
    ours = features(model, variables, x.transpose(0, 2, 3, 1))
    err = relative_error(ours, theirs)
    print(f"ViT-B/16 {reference} -> jssl: max relative error {err:.2e}")
    assert err < 1e-4


@needs_torch
def test_pth_files_load_with_weights_only(tmp_path, resnet18):
    _, v = resnet18
    teacher = {f"backbone.{k}": torch.from_numpy(a) for k, a in convert.to_torch(v).items()}
    checkpoint = {
        "teacher": teacher,
        "student": {f"module.{k}": t + 1 for k, t in teacher.items()},
        "args": argparse.Namespace(arch="resnet18", lr=0.1),  # as DINO's full checkpoints
        "epoch": 3,
    }
    path = str(tmp_path / "dino.pth")
    torch.save(checkpoint, path)
    assert_trees_equal(convert.load_backbone(path, v, prefix="teacher", input_norm="none"), v)
    moco = {  # MoCo v2's release: two encoders and the queue under state_dict, a .pth.tar
        "state_dict": {
            **{f"module.encoder_q.{k[len('backbone.') :]}": t for k, t in teacher.items()},
            **{f"module.encoder_k.{k[len('backbone.') :]}": t + 1 for k, t in teacher.items()},
            "module.queue": torch.zeros(128, 16),
        },
        "arch": "resnet18",
    }
    torch.save(moco, str(tmp_path / "moco.pth.tar"))
    loaded = convert.load_backbone(
        str(tmp_path / "moco.pth.tar"), v, prefix="encoder_q", input_norm="none"
    )
    assert_trees_equal(loaded, v)
    torch.save({"state_dict": teacher, "obj": _Unsafe()}, str(tmp_path / "unsafe.pth"))
    msg = one_line_error(convert.load_backbone, str(tmp_path / "unsafe.pth"), v)
    assert "holds Python objects besides tensors" in msg and "_Unsafe" in msg


class _Unsafe:
    """A class torch.load(weights_only=True) refuses to unpickle."""
