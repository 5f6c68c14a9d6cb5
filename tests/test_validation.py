"""The config checked whole at start (jssl.validation), one `error:` line for every bad input
through train.py and `python -m jssl.visualize`, checkpoints that open without background
work, and retention that a kill cannot leave half-deleted."""

import importlib
import json
import os
import signal
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jssl import checkpoint, optim, validation
from jssl.errors import UserError
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
METHOD_CONFIGS = (
    "simclr", "dino", "sela", "scan", "rotation", "jigsaw", "context", "denoising",
    "inpainting", "colorization", "autoencoder", "equivariance", "vae",
    "byol", "simsiam", "barlow_twins", "vicreg", "mocov2", "mocov3", "nnclr", "swav", "mae",
)  # fmt: skip
TWO_VIEW_METHODS = (
    "byol", "simsiam", "barlow_twins", "vicreg", "mocov2", "mocov3", "nnclr", "swav",
)  # fmt: skip
PRESETS = ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet")


def config_of(name="simclr", arg="digits,smoke", **overrides):
    c = importlib.import_module(f"configs.{name}").get_config(arg)
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def problems_of(config):
    return validation.config_problems(config)


# ----------------------------------------------------------------------------- config only


def test_every_shipped_config_validates(tmp_path):
    prepared = tmp_path / "prepared"  # what the streamed presets' data.path must hold
    prepared.mkdir()
    (prepared / "meta.json").write_text("{}")
    for name in METHOD_CONFIGS:
        args = [p + m for p in PRESETS for m in ("", ",smoke")]
        if name == "scan":
            args += ["imagenet100", "imagenet100,smoke"]
            args += [a + ",selflabel" for a in args]
        for arg in args:
            config = config_of(name, arg)
            for c in (config, *_stages(config)):
                if c.data.name == "image_folder":
                    c.data.path = str(tmp_path)
                if c.data.name == "arrayrecord":
                    c.data.path = str(prepared)
            assert problems_of(config) == [], (name, arg)
            validation.validate(config, str(tmp_path / "run"), devices=jax.devices()[:1])


def _stages(config):
    for stage in config.get("stages", {}).values():
        yield stage
        yield from _stages(stage)


def test_every_problem_is_reported_together_naming_field_value_and_fix():
    config = config_of(
        **{
            "batch_size": 0,
            "optim.momentum": 1.5,
            "optim.learning_rate": float("nan"),
            "eval.knn_k": 0,
            "model.name": "resnet19",
            "data.on_bad_image": "maybe",
        }
    )
    with pytest.raises(validation.ConfigError) as e:
        validation.validate_config(config)
    message = str(e.value)
    assert message.startswith("6 problems: ") and "\n" not in message
    for part in (
        "batch_size=0: must be an integer >= 1",
        "optim.momentum=1.5: must be a finite number in [0, 1]",
        "optim.learning_rate=nan: must be a finite number > 0",
        "eval.knn_k=0: must be an integer >= 1",
        "model.name='resnet19': unknown model; use one of 'convnet', 'resnet18'",
        "data.on_bad_image='maybe': unknown data.on_bad_image mode; use one of 'fail', 'skip'",
    ):
        assert part in message, (part, message)
    assert isinstance(e.value, UserError)


@pytest.mark.parametrize(
    "name, overrides, expected",
    [
        ("simclr", {"num_epochs": -1.0}, "num_epochs=-1.0: must be a finite number in [0, "),
        ("simclr", {"num_epochs": 0.0, "num_steps": 0}, "num_epochs=0.0: must be > 0 (or set"),
        ("simclr", {"num_steps": 2**40}, "num_steps=1099511627776: must be an integer in [0, "),
        ("simclr", {"log_every": 0}, "log_every=0: must be an integer >= 1"),
        ("simclr", {"checkpoint_every": -2}, "checkpoint_every=-2: must be an integer >= 1"),
        ("simclr", {"keep_checkpoints": 0}, "keep_checkpoints=0: must be an integer >= 1"),
        ("simclr", {"seed": -1}, "seed=-1: must be an integer in [0, "),
        (
            "simclr",
            {"augment.crop_size": 0},
            "augment.crop_size=0: must be an integer in [1, 8192]",
        ),
        ("simclr", {"augment.scale": (0.9, 0.1)}, "augment.scale=(0.9, 0.1): must be a pair"),
        ("simclr", {"augment.strength": 3.0}, "augment.strength=3.0: must be a finite number in"),
        ("simclr", {"augment.crop_size": 1, "augment.blur_p": 0.5}, "blurs the crops, which"),
        ("simclr", {"augment.crop_size": 1, "augment.blur_p": 0.0}, None),
        ("dino", {"augment.crop_size": 1, "model.name": "convnet", "model.kwargs": {}}, "blurs"),
        ("simclr", {"data.image_size": -8}, "data.image_size=-8: must be an integer in [0, 8192]"),
        (
            "simclr",
            {"simclr.temperature": 0.0},
            "simclr.temperature=0.0: must be a finite number > 0",
        ),
        ("simclr", {"eval.knn_temperature": float("inf")}, "eval.knn_temperature=inf"),
        (
            "simclr",
            {"eval.probe_epochs": 0},
            "eval.probe_epochs=0: must be an integer in [1, 100000]",
        ),
        ("simclr", {"optim.b2": 1.0}, "optim.b2=1.0: must be a finite number in [0, 1)"),
        (
            "simclr",
            {"optim.name": "adam"},
            "optim.name='adam': unknown optimiser; use one of 'sgd'",
        ),
        ("simclr", {"method": "nope"}, "method='nope': unknown method; use one of 'autoencoder'"),
        ("simclr", {"eval.representation": "z"}, "eval.representation='z': unknown"),
        ("simclr", {"model.dtype": "int8"}, "model.dtype='int8': unknown dtype"),
        ("simclr", {"data.name": "cifar100"}, "unknown dataset source 'cifar100'; known sources: "),
        ("simclr", {"data.name": "image_folder"}, "data.path='': the image_folder source needs"),
        ("simclr", {"data.name": "tfds"}, "data.tfds_name='': the tfds source needs"),
        ("simclr", {"init_from.params": ()}, "init_from.params=(): must be a non-empty tuple"),
        (
            "simclr",
            {"init_from.workdir": "stage:x"},
            "names no stage of this config (stages: none)",
        ),
        ("simclr", {"eval.knn_k": 600}, "eval.knn_k=600: more neighbours than the 512 training"),
        ("simclr", {"model.name": "resnet18"}, "model.name='resnet18' takes no argument widths"),
        ("simclr", {"model.kwargs.widths": (8, 0)}, "model.kwargs.widths=(8, 0): every entry"),
        ("simclr", {"method": "dino"}, "method='dino': the config lacks fields this method reads"),
        ("simclr", {"optim.name": "dino_adamw"}, "reads optim.weight_decay_end, which the config"),
        (
            "dino",
            {"dino.center_momentum": 1.5},
            "dino.center_momentum=1.5: must be a finite number",
        ),
        ("dino", {"dino.out_dim": 0}, "dino.out_dim=0: must be an integer in [1, 1048576]"),
        ("dino", {"augment.num_local_crops": 0, "augment.num_global_crops": 1}, "at least 2 crops"),
        ("dino", {"augment.local_crop_size": 2}, "augment.local_crop_size=2: smaller than the ViT"),
        (
            "dino",
            {"model.kwargs.num_heads": 3},
            "model.kwargs.num_heads=3: the ViT width hidden=32",
        ),
        ("dino", {"augment.jitter": (0.4, 0.4, 0.2, 0.9)}, "augment.jitter=(0.4, 0.4, 0.2, 0.9)"),
        ("sela", {"sela.label_mode": "fuzzy"}, "sela.label_mode='fuzzy': unknown sela.label_mode"),
        ("sela", {"sela.lam": -1.0}, "sela.lam=-1.0: must be a finite number > 0"),
        ("sela", {"sela.class_weights": (1.0, 2.0)}, "2 weights for num_clusters=10"),
        ("sela", {"sela.num_clusters": 1}, "sela.num_clusters=1: must be an integer in [2, "),
        ("scan", {"scan.mine_on": "pixels"}, "scan.mine_on='pixels': unknown scan.mine_on"),
        ("scan", {"scan.num_neighbors": 0}, "scan.num_neighbors=0: must be an integer >= 1"),
        ("scan", {"stages.pretext.batch_size": 0}, "stages.pretext.batch_size=0: must be an"),
        ("scan", {"init_from.workdir": "stage:nope"}, "(stages: pretext); give a run folder or"),
        ("scan", {"selflabel.threshold": 1.0}, None),  # a scan-stage config has no selflabel block
        ("rotation", {"rotation.head": "mlp"}, "rotation.head='mlp': unknown rotation.head"),
        ("jigsaw", {"jigsaw.tile_size": 9}, "jigsaw.tile_size=9: larger than a cell of the 24 px"),
        ("jigsaw", {"jigsaw.grid": 4}, "jigsaw.grid=4: must be an integer in [2, 3]"),
        ("jigsaw", {"jigsaw.num_permutations": 10**6}, "a 3x3 grid has only 362880 permutations"),
        ("context", {"context.gap": 5}, "context.image_size=24: cannot hold 3 patches of 6 px"),
        ("denoising", {"denoising.noise": "pink"}, "denoising.noise='pink': unknown"),
        ("inpainting", {"inpainting.area": 1.0}, "inpainting.area=1.0: must be a finite number in"),
        ("colorization", {"colorization.target": "bins"}, "colorization.target='bins': unknown"),
        (
            "autoencoder",
            {"autoencoder.bottleneck": "sparse", "autoencoder.top_k": 999},
            "top_k=999",
        ),
        ("equivariance", {"equivariance.transforms": "d8"}, "equivariance.transforms='d8'"),
        ("vae", {"vae.seed_shape": (4, 4)}, "vae.seed_shape=(4, 4): must be a tuple of 3 entries"),
        ("vae", {"vae.scale": "fixed"}, "vae.scale='fixed': unknown vae.scale"),
        ("vae", {"decoder.upsample": "cubic"}, "decoder.upsample='cubic': unknown"),
    ],
)
def test_a_bad_field_names_field_value_and_fix(name, overrides, expected):
    config = config_of(name, "digits,smoke")
    for key, value in overrides.items():
        if key.split(".")[0] in config or "." not in key:
            node = config
            *path, last = key.split(".")
            for p in path:
                node = node[p]
            node[last] = value
    found = problems_of(config)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_wrong_types_are_problems_not_exceptions():
    config = config_of()
    with config.unlocked(), config.ignore_type():
        config.batch_size = "256"
        config.augment.flip = 1
        config.optim.learning_rate = None
        config.model.kwargs = 5
        config.eval.knn_k = 2.0
    found = "; ".join(problems_of(config))
    for field in ("batch_size='256'", "augment.flip=1", "optim.learning_rate=None"):
        assert field in found
    assert "model.kwargs=5: must be a ConfigDict" in found and "eval.knn_k=2.0" in found


def test_optimiser_names_are_jssl_optim_s():
    config = config_of("dino")
    for name in validation.OPTIMIZERS:
        config.optim.name = name
        optim.make_optimizer(config, total_steps=10, steps_per_epoch=5)
    config.optim.name = "adam"
    with pytest.raises(UserError, match="Unknown optimizer"):
        optim.make_optimizer(config, total_steps=10, steps_per_epoch=5)


def test_every_method_declares_a_check_for_every_field_of_its_blocks():
    """Each method's ``fields`` hold a check of every field of its config blocks, in every
    preset of its config file (DINO with its DINOv2 options too)."""
    from jssl.methods import METHODS

    config_files = {"selflabel": ("scan", ",selflabel"), "dino": ("dino", ",dinov2")}
    for name, method in sorted(METHODS.items()):
        file, modifier = config_files.get(name, (name, ""))
        blocks = {f.split(".", 1)[0] for f in method.fields} - {"augment"}
        assert name in blocks, (name, blocks)
        for preset in PRESETS:
            config = config_of(file, preset + modifier)
            assert config.method == name
            for block in blocks:
                unchecked = [k for k in config[block].keys() if f"{block}.{k}" not in method.fields]
                assert unchecked == [], (name, preset, block, unchecked)


def test_another_methods_config_lacks_the_new_methods_fields():
    for name in (*TWO_VIEW_METHODS, "mae"):
        found = problems_of(config_of("simclr", method=name))
        lacking = [p for p in found if f"method={name!r}: the config lacks fields" in p]
        assert len(lacking) == 1 and f"{name}." in lacking[0], (name, found)
        assert lacking[0].endswith(f"use --config=configs/{name}.py"), lacking


@pytest.mark.parametrize(
    "name, arg, overrides, expected",
    [
        ("byol", "", {"byol.target_momentum": 1.5}, "byol.target_momentum=1.5: must be a fin"),
        ("byol", "", {"augment.global_blur_p": (1.5,)}, "augment.global_blur_p=(1.5,): every"),
        ("simsiam", "", {"simsiam.pred_hidden_dims": (0,)}, "simsiam.pred_hidden_dims=(0,)"),
        ("simsiam", "", {"augment.strength": 3.0}, "augment.strength=3.0: must be a finite"),
        ("barlow_twins", "", {"barlow_twins.scale_loss": 0.0}, "scale_loss=0.0: must be a fi"),
        ("barlow_twins", "", {"barlow_twins.lambda_": -1.0}, "lambda_=-1.0: must be a finite"),
        (
            "vicreg",
            "",
            {"vicreg.sim_coeff": 0.0, "vicreg.std_coeff": 0.0, "vicreg.cov_coeff": 0.0},
            "the loss is 0 and nothing is learned",
        ),
        ("vicreg", "", {"vicreg.sim_coeff": 0.0}, None),
        ("mocov2", "", {"mocov2.queue_size": 16}, "mocov2.queue_size=16: smaller than batch_si"),
        ("mocov3", "", {"mocov3.temperature": 0.0}, "mocov3.temperature=0.0: must be a finite"),
        ("mocov3", "", {"mocov3.momentum_end": 2.0}, "mocov3.momentum_end=2.0: must be a fini"),
        ("mocov2", "", {"mocov2.proj_hidden_dims": (64, -1)}, "proj_hidden_dims=(64, -1): ev"),
        ("byol", "", {"byol.pred_hidden_dims": ()}, None),
        ("nnclr", "", {"nnclr.queue_size": 0}, "nnclr.queue_size=0: must be an integer in [1,"),
        ("nnclr", "", {"nnclr.queue_size": 31}, "nnclr.queue_size=31: smaller than batch_size"),
        ("swav", "", {"swav.num_prototypes": 1}, "swav.num_prototypes=1: must be an integer in"),
        ("swav", "", {"swav.queue_size": 8}, "swav.queue_size=8: smaller than batch_size=32"),
        ("swav", "", {"swav.queue_size": 0}, None),
        ("swav", "", {"swav.epsilon": -0.05}, "swav.epsilon=-0.05: must be a finite number > 0"),
        (
            "swav",
            "",
            {"augment.num_global_crops": 1, "augment.num_local_crops": 0},
            "SwAV compares pairs of different crops",
        ),
        ("mae", "", {"mae.mask_ratio": 1.0}, "mae.mask_ratio=1.0: must be a finite number in"),
        ("mae", "", {"mae.mask_ratio": 0.99}, "masks all 16 patches of a 16 px crop"),
        ("mae", "", {"mae.mask_ratio": 0.0}, "masks none of the 16 patches"),
        ("mae", "", {"augment.crop_size": 18}, "not a multiple of the ViT's patch_size=4"),
        ("mae", "", {"mae.decoder_num_heads": 3}, "decoder_num_heads=3: the decoder width"),
        ("mae", "", {"mae.decoder_hidden": 30, "mae.decoder_num_heads": 2}, "divisible by 4"),
        ("mae", "", {"model.kwargs.pos_embedding": "rope"}, "unknown ViT pos_embedding; use"),
        (
            "mae",
            "",
            {"model.kwargs.hidden": 34, "model.kwargs.num_heads": 2},
            "model.kwargs.hidden=34: sine-cosine position embeddings",
        ),
        ("dino", "digits,dinov2", {}, None),
        ("dino", "digits,dinov2", {"dino.koleo_weight": -0.1}, "koleo_weight=-0.1: must be a"),
        ("dino", "digits,dinov2", {"dino.ibot_mask_ratio": (0.6, 0.2)}, "must be a pair (a, b)"),
        ("dino", "digits,dinov2", {"dino.ibot_num_layers": 0}, "ibot_num_layers=0: must be an"),
        (
            "dino",
            "digits,dinov2",
            {"dino.ibot_mask_probability": 0.0},
            "dino.ibot_mask_probability=0: with dino.ibot_weight=1.0 no crop is ever masked",
        ),
        (
            "dino",
            "digits,dinov2",
            {"dino.ibot_mask_ratio": (0.01, 0.05)},
            "masks no patch of the 16 of a 16 px crop",
        ),
        ("dino", "digits", {"dino.ibot_weight": 1.0}, "needs a ViT backbone, not model.name="),
        ("dino", "digits", {"dino.koleo_weight": 0.1}, None),  # KoLeo works on any backbone
        ("dino", "digits", {"dino.koleo_weight": 0.1, "batch_size": 1}, "KoLeo (dino.koleo_"),
    ],
)
def test_new_methods_fields_and_combinations(name, arg, overrides, expected):
    found = problems_of(config_of(name, arg or "digits,smoke", **overrides))
    if expected is None:
        assert found == []
    else:
        assert any(expected in p for p in found), found


def test_mae_on_a_convnet_and_one_pixel_patches_are_problems():
    import ml_collections

    from jssl.data import Dataset, Split

    config = config_of(
        "mae", **{"model.name": "convnet", "model.kwargs": ml_collections.ConfigDict()}
    )
    assert any("MAE's encoder runs on the visible patch tokens" in p for p in problems_of(config))
    config = config_of("mae", **{"model.kwargs.patch_size": 1, "batch_size": 8})
    assert problems_of(config) == []
    x, y = np.zeros((20, 8, 8, 1), np.uint8), np.arange(20, dtype=np.int32) % 10
    data = Dataset(Split(x, y), Split(x, y), 10, tuple(map(str, range(10))), "tiny")
    config.eval.knn_k = 5
    assert validation.data_problems(config, data) == [
        "mae.norm_pix=True: patches of 1x1 px with 1 channel hold one value, which cannot be "
        "normalised by its own mean and variance; use --config.model.kwargs.patch_size=2 or "
        "more, or --config.mae.norm_pix=False"
    ]
    config.mae.norm_pix = False
    assert validation.data_problems(config, data) == []


# ----------------------------------------------------------------------------- run checks


def test_workdir_checks(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "dino_run").mkdir()
    (tmp_path / "dino_run" / "config.json").write_text(json.dumps({"method": "dino"}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")

    def problems(workdir, mode="train"):
        return validation.workdir_problems(str(workdir), "simclr", mode=mode)

    assert problems(tmp_path / "new" / "deeper") == []
    assert "is a file, not a folder" in problems(a_file)[0]
    assert f"cannot be created, {a_file} is a file" in problems(a_file / "run")[0]
    assert (
        "holds a 'dino' run (its config.json), not a 'simclr' one"
        in problems(tmp_path / "dino_run")[0]
    )
    assert "cannot read" in problems(tmp_path / "broken")[0]
    assert problems(tmp_path / "new", mode="eval") == [
        f"No checkpoint in {tmp_path / 'new' / 'checkpoints'}: train first with --mode=train "
        "and this --workdir."
    ]


def test_init_from_and_device_checks(tmp_path):
    config = config_of(**{"init_from.workdir": str(tmp_path / "nowhere"), "batch_size": 12})
    found = validation.problems(config, str(tmp_path / "run"), device_count=8, process_count=2)
    assert any("init_from.workdir=" in p and "no such folder" in p for p in found)
    assert any("batch_size=12 is not divisible by the 8 devices" in p for p in found)
    assert not any("processes" in p for p in found)  # 12 splits over 2 processes
    found = validation.problems(config_of(batch_size=9), device_count=1, process_count=2)
    assert found == [
        "batch_size=9 is not divisible by the 2 processes; set --config.batch_size to a "
        "multiple of 2"
    ]


def test_data_size_checks():
    from jssl.data import Dataset, Split

    def dataset(n_train, n_test, classes=10):
        x = lambda n: np.zeros((n, 8, 8, 1), np.uint8)  # noqa: E731
        y = lambda n: (np.arange(n) % classes).astype(np.int32)  # noqa: E731
        return Dataset(Split(x(n_train), y(n_train)), Split(x(n_test), y(n_test)), classes,
                       tuple(map(str, range(classes))), "tiny")  # fmt: skip

    assert validation.data_problems(config_of(), dataset(1437, 360)) == []
    found = validation.data_problems(config_of(batch_size=64), dataset(10, 5))
    assert any("batch_size=64 is larger than the 10 training examples of tiny" in p for p in found)
    assert any("eval.knn_k=20: more neighbours than the 10 training examples" in p for p in found)
    assert any("fewer than the 10 clusters k-means makes" in p for p in found)
    sela = config_of("sela", **{"sela.num_clusters": 50, "batch_size": 8, "eval.knn_k": 5})
    assert validation.data_problems(sela, dataset(40, 20)) == [
        "sela.num_clusters=50: more clusters than the 40 training examples of tiny; use at most 40"
    ]
    scan = config_of("scan", **{"scan.num_neighbors": 40, "batch_size": 8, "eval.knn_k": 5})
    found = validation.data_problems(scan, dataset(40, 20))
    assert len(found) == 1 and "scan.num_neighbors=40: needs more than" in found[0]
    dino = config_of("dino", **{"dino.warmup_teacher_temp_epochs": 1e9, "eval.knn_k": 5})
    found = validation.data_problems(dino, dataset(320, 20))
    assert found == [
        "dino.warmup_teacher_temp_epochs=1000000000.0: 10000000000 steps at 10 per epoch is "
        "more than the 2147483647 a run can count; use fewer"
    ]
    sela = config_of("sela", **{"sela.num_label_updates": 100, "eval.knn_k": 5})
    assert (
        "sela.num_label_updates=100: more labelling steps than the run's 4 steps"
        in (validation.data_problems(sela, dataset(320, 20))[0])
    )
    with pytest.raises(validation.ConfigError, match="^2 problems: "):
        validation.check_data(config_of(batch_size=64), dataset(10, 20))


# ----------------------------------------------------------------------------- checkpoints


@struct.dataclass
class _State:
    step: jax.Array
    params: dict


def _state(step):
    return _State(
        step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((64,), step, jnp.float32)}
    )


def test_opening_a_checkpointer_starts_no_thread_and_writes_nothing(tmp_path):
    before = set(threading.enumerate())
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    assert ckpt.latest_step() is None
    ckpt.close()
    assert not (tmp_path / "checkpoints").exists()
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []


def test_retention_renames_then_removes_old_steps(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, async_save=True)
    try:
        for step in (1, 2, 3, 4):
            ckpt.save(_state(step))
        ckpt.wait()
        assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]  # .deleted removed
        restored = ckpt.restore(_state(0))
    finally:
        ckpt.close()
    assert int(restored.step) == 4 and float(restored.params["w"][0]) == 4.0


# Saves steps 1 and 2 with keep=1 (retention renames step 1 into .deleted), then is
# SIGKILLed halfway through removing it: half its files are gone when the kill comes.
_KILL_DURING_DELETION = """
import os, signal, sys
import jax.numpy as jnp
from jssl import checkpoint
from tests.test_validation import _state

def remove_half_then_die(path):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for f in files[: len(files) // 2]:
        os.remove(f)
    print("killed while deleting", os.path.relpath(path, sys.argv[1]), len(files), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint._remove_tree = remove_half_then_die
ckpt = checkpoint.Checkpointer(sys.argv[1], keep=1, async_save=False)
ckpt.save(_state(1))
ckpt.save(_state(2))
"""


def test_a_kill_during_deletion_leaves_only_complete_steps(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_DELETION, str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=240,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert proc.stdout.startswith("killed while deleting checkpoints/.deleted/1 ")
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(n for n in os.listdir(ckpt_dir) if not n.startswith(".")) == ["2"]
    assert os.listdir(ckpt_dir / ".deleted") == ["1"]  # the half-removed step, out of the way
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1)
    try:
        assert not (ckpt_dir / ".deleted").exists()  # removed when the next run opens the folder
        assert ckpt.manager.all_steps() == [2]
        restored = ckpt.restore(_state(0))
    finally:
        ckpt.close()
    assert int(restored.step) == 2 and float(restored.params["w"][0]) == 2.0


# ----------------------------------------------------------------------------- train.py


def _train_py(workdir, *args, config="configs/simclr.py:digits,smoke"):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--config={config}"]
    return cmd + [f"--workdir={workdir}", *args]


def _run_all(commands):
    """Runs the commands concurrently (they fail before any compilation): name -> (rc, out, err)."""
    procs = {
        name: subprocess.Popen(
            cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, cmd in commands.items()
    }
    return {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}


def _assert_one_error_line(name, rc, out, err):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1, (name, rc, err[-2000:])
    assert len(errors) == 1, (name, err[-2000:])
    assert "Traceback" not in out and "Traceback" not in err, (name, err[-3000:])
    body = errors[0][len("error: ") :]
    assert err.count(body) == 1, (name, err[-2000:])  # no second copy (e.g. an absl E line)
    return errors[0]


def test_each_kind_of_bad_input_is_one_error_line_through_train_py(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    dino_run = tmp_path / "dino_run"
    dino_run.mkdir()
    (dino_run / "config.json").write_text(json.dumps({"method": "dino"}))
    cases = {
        "numeric ranges and registry names": (
            ["--config.batch_size=0", "--config.optim.momentum=1.5", "--config.num_epochs=-1",
             "--config.optim.learning_rate=nan", "--config.eval.knn_k=0",
             "--config.model.name=resnet19", "--config.optim.name=adam",
             "--config.data.on_bad_image=maybe", "--config.eval.representation=z"],
            ["batch_size=0", "optim.momentum=1.5", "optim.learning_rate=nan", "eval.knn_k=0",
             "unknown model", "unknown optimiser", "unknown data.on_bad_image mode",
             "unknown eval.representation", "9 problems: "],
        ),
        "unknown method": (["--config.method=nope"], ["method='nope': unknown method"]),
        "another method's fields": (["--config.method=dino"], ["use --config=configs/dino.py"]),
        "combination and devices": (
            ["--config.jigsaw.tile_size=9", "--config.batch_size=12"],
            ["jigsaw.tile_size=9: larger than a cell", "batch_size=12 is not divisible by the 8"],
            "configs/jigsaw.py:digits,smoke",
        ),
        "workdir is a file": ([], ["is a file, not a folder"], None, a_file),
        "workdir under a file": ([], [f"cannot be created, {a_file}"], None, a_file / "x"),
        "another method's run": ([], ["holds a 'dino' run"], None, dino_run),
        "data size": (
            ["--config.sela.num_clusters=5000", "--config.eval.max_train_examples=0"],
            ["sela.num_clusters=5000: more clusters than the 1437 training examples"],
            "configs/sela.py:digits,smoke",
        ),
        "wrong type": (["--config.batch_size=abc"], ["flag --config.batch_size=abc"]),
        "unexpected argument": (["extra"], ["unexpected arguments ['extra']"]),
    }  # fmt: skip
    commands = {}
    for i, (name, case) in enumerate(cases.items()):
        args, _, config, workdir = (*case, None, None)[:4]
        workdir = workdir or tmp_path / f"run{i}"
        commands[name] = _train_py(
            workdir, *args, config=config or "configs/simclr.py:digits,smoke"
        )
    for name, (rc, out, err) in _run_all(commands).items():
        line = _assert_one_error_line(name, rc, out, err)
        for part in cases[name][1]:
            assert part in line, (name, part, line)
    for i in range(len(cases)):
        assert not (tmp_path / f"run{i}" / "checkpoints").exists()
    assert not (dino_run / "checkpoints").exists()


@pytest.mark.slow
def test_eval_without_checkpoint_ten_times_without_a_traceback(tmp_path):
    """It used to print orbax's 40-line traceback after the error in most runs."""
    (tmp_path / "run").mkdir()
    commands = {i: _train_py(tmp_path / "run", "--mode=eval") for i in range(10)}
    for i, (rc, out, err) in _run_all(commands).items():
        line = _assert_one_error_line(i, rc, out, err)
        assert "No checkpoint in" in line and "train first" in line
        assert err.strip() == line, err  # nothing printed after (or before) the error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_traceback_flag_and_verbosity_show_the_traceback(tmp_path):
    commands = {
        "--traceback": _train_py(tmp_path / "a", "--config.batch_size=0", "--traceback"),
        "-v 1": _train_py(tmp_path / "b", "--config.batch_size=0", "-v", "1"),
        "parse error": _train_py(tmp_path / "c", "--config.nope=1", "--traceback"),
        "visualize": [sys.executable, "-m", "jssl.visualize", "attention", "--workdir",
                      str(tmp_path / "none"), "--traceback"],
    }  # fmt: skip
    for name, (rc, _, err) in _run_all(commands).items():
        assert rc == 1 and "Traceback (most recent call last)" in err, (name, err[-2000:])
        if name in ("--traceback", "-v 1"):
            assert "jssl.validation.ConfigError: batch_size=0" in err, err[-2000:]


def test_visualize_errors_are_one_line(tmp_path):
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    config = config_of("vae")
    (no_checkpoint / "config.json").write_text(config.to_json_best_effort())
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{")
    vis = [sys.executable, "-m", "jssl.visualize"]
    commands = {
        "no run": vis + ["attention", "--workdir", str(tmp_path / "none")],
        "no checkpoint": vis + ["reconstructions", "--workdir", str(no_checkpoint)],
        "bad json": vis + ["reconstructions", "--workdir", str(bad_json)],
        "usage": vis + ["reconstructions"],
    }
    expected = {
        "no run": "holds no jssl run (no config.json)",
        "no checkpoint": "No checkpoint in",
        "bad json": "cannot read",
        "usage": "the following arguments are required: --workdir",
    }
    for name, (rc, out, err) in _run_all(commands).items():
        line = _assert_one_error_line(name, rc, out, err)
        assert expected[name] in line, (name, line)
    assert not (no_checkpoint / "checkpoints").exists()


def test_stage_workdir_is_checked(tmp_path):
    """SCAN's pretext stage runs in W/pretext: another method's run there is refused up front."""
    (tmp_path / "pretext").mkdir()
    (tmp_path / "pretext" / "config.json").write_text(json.dumps({"method": "vae"}))
    config = config_of("scan")
    found = validation.problems(config, str(tmp_path), device_count=1)
    assert len(found) == 1 and found[0].startswith("the pretext stage's --workdir=")
    assert "holds a 'vae' run" in found[0]


def test_sela_soft_labels_that_cannot_fit_on_a_device():
    from jssl.data import Dataset, Split, Subset

    tiny = Split(np.zeros((10, 8, 8, 1), np.uint8), np.arange(10, dtype=np.int32))
    n = 1_281_167  # ImageNet-1k's training set, as a Subset that holds no images
    imagenet = Dataset(Subset(tiny, np.zeros(n, np.int64)), tiny, 10, tuple("0123456789"), "big")
    kw = {"sela.num_heads": 10, "sela.num_clusters": 3000, "eval.knn_k": 5}
    soft = config_of("sela", **kw, **{"sela.label_mode": "soft"})
    assert validation.data_problems(soft, imagenet) == [
        "sela.label_mode='soft': 10 heads x 1281167 examples x 3000 clusters of float32 labels "
        "are 143.2 GiB per device (on every device; more than 4 GiB); use "
        "--config.sela.label_mode=hard (0.05 GiB of int32 labels per device)"
    ]
    assert validation.data_problems(config_of("sela", **kw), imagenet) == []
    # Split by example over the 8 devices when N is a multiple of 8: 8.9 GiB in all is
    # 1.1 GiB per device; one example more and it is 8.9 GiB on every device.
    for n, problems in [(80_000, 0), (80_001, 1)]:
        big = Dataset(Subset(tiny, np.zeros(n, np.int64)), tiny, 10, tuple("0123456789"), "b")
        assert len(validation.data_problems(soft, big)) == problems
    n = 8 * 160_146
    big = Dataset(Subset(tiny, np.zeros(n, np.int64)), tiny, 10, tuple("0123456789"), "b")
    assert "17.9 GiB per device (split over 8 devices;" in validation.data_problems(soft, big)[0]


def test_a_config_saved_before_the_loop_and_evaluation_fields_still_validates():
    """Runs saved before steps_in_flight, eval.at_deadline and eval.cpu_max_train_examples
    existed still report and evaluate: those fields are checked where present."""
    config = tiny_config("simclr")
    del config.steps_in_flight, config.eval.at_deadline, config.eval.cpu_max_train_examples
    assert validation.config_problems(config) == []
    config = tiny_config("simclr", steps_in_flight=-1)
    assert any("steps_in_flight" in p for p in validation.config_problems(config))
