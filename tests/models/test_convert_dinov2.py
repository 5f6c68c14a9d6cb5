"""DINOv2's ViTs into jssl (continued pretraining from DINOv2 weights): a random state dict
in the official layout (LayerScale, register tokens, a [1, D] mask token) loads into a jssl
ViT with ``layer_scale`` and ``num_registers``, and its features equal a float64 numpy
forward written from facebookresearch/dinov2 ``vision_transformer.py``; the chunked FSDP
names and timm's ``reg_token`` read the same; a DINOv3 run starts student and teacher (and
the Gram teacher) from the file. No torch needed."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs import dino as dino_config
from jssl import trainer
from jssl.models import ViT, convert
from tests.helpers import jit_init, set_fields

D, HEADS, DEPTH, PATCH, SIZE, REGS = 32, 2, 2, 4, 16, 4
KW = dict(patch_size=PATCH, image_size=SIZE, depth=DEPTH, hidden=D, num_heads=HEADS, mlp_dim=64)


def official_state_dict(seed=0, channels=3) -> dict[str, np.ndarray]:
    """The tensors of DINOv2's DinoVisionTransformer (n_storage_tokens=4, layerscale)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, s=0.2: (s * rng.normal(size=shape)).astype(np.float32)
    grid = (SIZE // PATCH) ** 2
    sd = {
        "patch_embed.proj.weight": r(D, channels, PATCH, PATCH),
        "patch_embed.proj.bias": r(D),
        "cls_token": r(1, 1, D),
        "pos_embed": r(1, 1 + grid, D),
        "register_tokens": r(1, REGS, D),
        "mask_token": r(1, D),
        "norm.weight": 1 + r(D),
        "norm.bias": r(D),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(D),
                b + "norm1.bias": r(D),
                b + "attn.qkv.weight": r(3 * D, D),
                b + "attn.qkv.bias": r(3 * D),
                b + "attn.proj.weight": r(D, D),
                b + "attn.proj.bias": r(D),
                b + "ls1.gamma": r(D, s=0.5),
                b + "norm2.weight": 1 + r(D),
                b + "norm2.bias": r(D),
                b + "mlp.fc1.weight": r(64, D),
                b + "mlp.fc1.bias": r(64),
                b + "mlp.fc2.weight": r(D, 64),
                b + "mlp.fc2.bias": r(D),
                b + "ls2.gamma": r(D, s=0.5),
            }
        )
    return sd


def np_dinov2(sd, x):
    """DinoVisionTransformer.forward_features in float64 (x: [N, H, W, 3]): x_norm_clstoken and
    x_norm_patchtokens, at the stored position grid (no interpolation)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    n = x.shape[0]
    g = SIZE // PATCH
    patches = x.reshape(n, g, PATCH, g, PATCH, 3).transpose(0, 1, 3, 5, 2, 4).reshape(n, g * g, -1)
    w = sd["patch_embed.proj.weight"].reshape(D, -1)  # [D, 3 * p * p] (c, kh, kw order)
    t = patches @ w.T + sd["patch_embed.proj.bias"]
    t = np.concatenate([np.broadcast_to(sd["cls_token"], (n, 1, D)), t], 1) + sd["pos_embed"]
    t = np.concatenate(
        [t[:, :1], np.broadcast_to(sd["register_tokens"], (n, REGS, D)), t[:, 1:]], 1
    )

    def ln(v, p):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * sd[p + ".weight"] + sd[p + ".bias"]

    def linear(v, p):
        return v @ sd[p + ".weight"].T + sd[p + ".bias"]

    for i in range(DEPTH):
        b = f"blocks.{i}."
        qkv = linear(ln(t, b + "norm1"), b + "attn.qkv").reshape(n, -1, 3, HEADS, D // HEADS)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
        a = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // HEADS)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(n, -1, D)
        t = t + sd[b + "ls1.gamma"] * linear(y, b + "attn.proj")
        h = linear(ln(t, b + "norm2"), b + "mlp.fc1")
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))  # exact GELU
        t = t + sd[b + "ls2.gamma"] * linear(h, b + "mlp.fc2")
    t = ln(t, "norm")
    return t[:, 0], t[:, 1 + REGS :]


def _target():
    model = ViT(num_registers=REGS, layer_scale=1e-5, mask_token=True, **KW)
    x = jnp.zeros((1, SIZE, SIZE, 3))
    return model, {"params": jit_init(model, x, train=False)["params"], "batch_stats": {}}


def test_official_dinov2_layout_loads_and_matches_the_reference_forward(tmp_path):
    sd = official_state_dict()
    path = str(tmp_path / "dinov2.safetensors")
    save_file(sd, path)
    model, target = _target()
    loaded = convert.load_backbone(path, target, input_norm="none")
    x = np.random.default_rng(1).random((3, SIZE, SIZE, 3)).astype(np.float32)
    cls, aux = model.apply({"params": loaded["params"]}, jnp.asarray(x), train=False)
    want_cls, want_patches = np_dinov2(sd, x)
    np.testing.assert_allclose(np.asarray(cls), want_cls, rtol=1e-5, atol=1e-5)
    patches = np.asarray(aux["feature_map"]).reshape(3, -1, D)
    np.testing.assert_allclose(patches, want_patches, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded["params"]["mask_token"].reshape(-1), sd["mask_token"][0])
    # Back to the official names: the same tensors (the mask token as jssl's [1, 1, D]).
    back = convert.to_torch(loaded)
    assert {k for k in back if "ls1" in k or "register" in k} == {
        "blocks.0.ls1.gamma",
        "blocks.1.ls1.gamma",
        "register_tokens",
    }
    for k, v in sd.items():
        np.testing.assert_allclose(back[k].reshape(v.shape), v, rtol=1e-6)


def test_chunked_fsdp_names_and_timm_registers_read_the_same(tmp_path):
    sd = official_state_dict()
    model, target = _target()
    want = convert.load_backbone(_saved(tmp_path, "plain", sd), target, input_norm="none")
    # DINOv2's BlockChunk: blocks.<chunk>.<block>., the block index global.
    chunked = {k.replace("blocks.0.", "blocks.0.0.").replace("blocks.1.", "blocks.1.1."): v
               for k, v in sd.items()}  # fmt: skip
    assert "blocks.1.1.ls2.gamma" in chunked
    timm = {("reg_token" if k == "register_tokens" else k): v for k, v in sd.items()}
    for name, other in (("chunked", chunked), ("timm", timm)):
        got = convert.load_backbone(_saved(tmp_path, name, other), target, input_norm="none")
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)
    # A jssl ViT without registers or LayerScale names what it cannot place.
    plain = ViT(**KW)
    no_ls = {"params": jit_init(plain, jnp.zeros((1, SIZE, SIZE, 3)), train=False)["params"]}
    with pytest.raises(convert.ConversionError, match="register_tokens|ls1"):
        convert.load_backbone(_saved(tmp_path, "plain2", sd), no_ls, input_norm="none")


def _saved(tmp_path, name, sd) -> str:
    path = str(tmp_path / f"{name}.safetensors")
    save_file(sd, path)
    return path


def test_a_dinov3_run_starts_student_teacher_and_gram_teacher_from_the_file(tmp_path):
    sd = official_state_dict(channels=1)  # digits are grey
    sd = {"teacher.backbone." + k: v for k, v in sd.items()}
    sd["teacher.dino_head.mlp.0.weight"] = np.zeros((8, D), np.float32)
    path = _saved(tmp_path, "ckpt", sd)
    config = dino_config.get_config("digits,smoke,dinov3")
    config.model.kwargs = dict(KW, num_registers=REGS, layer_scale=1e-5)
    config = set_fields(
        config,
        **{
            "init_from.weights": path,
            "init_from.prefix": "teacher",
            "init_from.input_norm": "none",
        },
    )
    config.data.name = "digits"
    exp = trainer.Experiment(config, jax.devices()[:1])
    state = jax.device_get(exp.init_state())
    backbone = state.params["backbone"]
    np.testing.assert_array_equal(
        backbone["block2"]["ls2"]["gamma"], sd["teacher.backbone.blocks.1.ls2.gamma"]
    )
    np.testing.assert_array_equal(backbone["registers"], sd["teacher.backbone.register_tokens"])
    for copy in (
        state.method_state["teacher"].params["backbone"],
        state.method_state["gram_teacher"],
    ):
        for a, b in zip(jax.tree.leaves(copy), jax.tree.leaves(backbone), strict=True):
            np.testing.assert_array_equal(a, b)
