"""Blocks shared by every method's config.

A config file is ``get_config(arg) -> ConfigDict``. ``arg`` is a comma-separated
list: a data preset ("digits", "cifar10", "cifar10_folder", "stl10",
"imagenet") optionally followed by modifiers ("smoke" shrinks everything to a
seconds-long run; "cpu" sizes a CIFAR-10 preset for a few CPU cores), e.g.
``configs/simclr.py:digits,smoke`` or ``configs/simclr.py:cifar10_folder,cpu``.

Config files are Python code that runs when loaded: only load configs you trust.
"""

from __future__ import annotations

import ml_collections

DATA_PRESETS = ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet")
MODIFIERS = ("smoke", "cpu")


def parse_arg(
    arg: str | None, default: str = "digits", modifiers: tuple[str, ...] = MODIFIERS
) -> tuple[str, set[str]]:
    """'cifar10,smoke' -> ('cifar10', {'smoke'}); ``modifiers``: those the config file knows
    (e.g. DINO's "dinov2"); errors list what would work."""
    parts = [p.strip() for p in (arg or default).split(",") if p.strip()]
    presets = [p for p in parts if p in DATA_PRESETS]
    unknown = [p for p in parts if p not in DATA_PRESETS and p not in modifiers]
    if unknown or len(presets) > 1:
        raise ValueError(
            f"Bad config argument {arg!r}: use one of {', '.join(DATA_PRESETS)} "
            f"optionally followed by modifiers {', '.join(modifiers)} (e.g. 'digits,smoke')."
        )
    return (presets[0] if presets else default), set(parts) - set(presets)


def base_config(method: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.batch_size = 256
    c.num_epochs = 100.0
    c.num_steps = 0  # > 0 overrides num_epochs
    c.log_every = 20
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    # Refuse to resume a workdir whose saved config differs in anything but
    # RESUMABLE_FIELDS, unless this is True.
    c.allow_config_change = False
    # Stop with an error at the first non-finite loss/gradient (the update is
    # never applied); > 0 tolerates that many skipped steps instead.
    c.max_nonfinite_steps = 0
    # > 0: stop (after saving) once training has run this long, then evaluate (unless
    # eval.at_deadline is False); rerun to continue.
    c.max_train_seconds = 0.0
    # At most this many dispatched train steps unfinished (0: no bound): progress,
    # deadline and signals act on finished work, at most this many steps behind.
    c.steps_in_flight = 2

    # Start from another run's weights: a run folder, or "stage:NAME" for the earlier
    # stage c.stages.NAME, trained first in <workdir>/NAME (SCAN: pretext -> SCAN ->
    # self-labelling). `params` names the top-level parameter subtrees taken.
    c.init_from = ml_collections.ConfigDict()
    c.init_from.workdir = ""
    c.init_from.params = ("backbone",)
    # Or start from (in eval mode: evaluate) the backbone in a PyTorch-layout file: torchvision
    # ResNets, timm/DINO ViTs (jssl.models.convert); .safetensors, or .pth/.pt with torch.
    # `prefix` picks the backbone of a file holding several (e.g. "teacher"); `input_norm` is
    # the input normalisation the weights expect, folded into the first layer (auto: imagenet,
    # none for files made by python -m jssl.export).
    c.init_from.weights = ""
    c.init_from.prefix = ""
    c.init_from.input_norm = "auto"
    c.stages = ml_collections.ConfigDict()  # name -> the config of an earlier stage

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | image_folder | tfds (in memory) | arrayrecord (streamed)
    c.data.path = ""  # image_folder root with train/ and test/; arrayrecord: prepared folder
    c.data.tfds_name = ""
    c.data.data_dir = ""  # tfds data_dir ("" = tfds default)
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.image_size = 0  # 0 = native size
    c.data.cache_dir = ""  # "" = ~/.cache/jssl or $JSSL_CACHE_DIR
    c.data.on_bad_image = "fail"  # fail | skip
    # Streamed sources (arrayrecord): decoding threads, batches decoded ahead, and grain
    # worker processes (0 = threads in the training process).
    c.data.stream = False  # tfds: stream the prepared files instead of loading them
    c.data.num_threads = 8
    c.data.prefetch = 2
    c.data.num_workers = 0
    # > 0: hold out this share of every class of the training set as a validation split
    # (drawn from data.val_seed; training and the evaluators' fit use the rest).
    c.data.val_fraction = 0.0
    c.data.val_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "convnet"
    c.model.dtype = "float32"  # compute dtype; parameters stay float32
    c.model.kwargs = ml_collections.ConfigDict()

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_size = 32
    c.augment.scale = (0.08, 1.0)
    c.augment.strength = 0.5
    c.augment.jitter_p = 0.8
    c.augment.gray_p = 0.2
    c.augment.blur_p = 0.0
    c.augment.flip = True

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # sgd | lars | adamw | dino_adamw
    c.optim.learning_rate = 0.1
    c.optim.scale_lr_by_batch = True  # peak lr = learning_rate * batch_size / 256
    c.optim.warmup_epochs = 10.0
    c.optim.end_lr_factor = 0.0
    c.optim.weight_decay = 1e-4
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.grad_clip = 0.0

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512
    c.eval.knn_k = 20
    c.eval.knn_temperature = 0.07
    c.eval.probe_epochs = 100
    c.eval.untrained = True  # also evaluate the network at initialisation
    c.eval.at_deadline = True  # evaluate a run that max_train_seconds stopped
    c.eval.max_train_examples = 0  # > 0 caps the train features used by kNN/probe
    # With max_train_examples 0, on the CPU backend: at most this many (about a minute or two
    # of a ResNet-18's features on 2 cores); 0 fits on every training image there too.
    c.eval.cpu_max_train_examples = 10_000
    c.eval.representation = "features"  # features (backbone h) | output (e.g. projection z)
    # > 0: every that many steps, a cheap kNN on at most during_max_examples training and
    # test examples (fixed subsets), logged as kind "eval_during"; the final evaluation is
    # unchanged.
    c.eval.every_steps = 0
    c.eval.during_max_examples = 1000
    # Evaluators run after the method's own, e.g. "('lidar', 'rankme')" (label-free scores).
    c.eval.extra_evaluators = ()
    # LiDAR: this many test images (each its own class), in this many random crops each.
    c.eval.lidar_images = 1000
    c.eval.lidar_views = 10
    # The split the evaluation scores: "test", or "val" (the split data.val_fraction carves
    # from the training set: choose hyperparameters there, never on the test split).
    c.eval.split = "test"
    return c


def resnet_kwargs(stem: str, stage_sizes: tuple[int, ...]) -> ml_collections.ConfigDict:
    """Every ResNet argument a command line may override, e.g. a CPU-sized network with
    ``--config.model.kwargs.width=16 --config.model.kwargs.stage_sizes="(1, 1, 1, 1)"
    --config.model.kwargs.conv_impl=xla`` (flags can change fields, not add them)."""
    return ml_collections.ConfigDict(
        {"stem": stem, "width": 64, "stage_sizes": stage_sizes, "conv_impl": "auto"}
    )


def apply_data_preset(c: ml_collections.ConfigDict, preset: str) -> None:
    """Data, model and augmentation blocks for a data preset."""
    if preset == "digits":
        c.data.name = "digits"
        c.model.name = "convnet"
        c.model.kwargs = ml_collections.ConfigDict({"widths": (32, 64, 128)})
        c.augment.crop_size = 16
        c.augment.scale = (0.3, 1.0)
        c.augment.flip = False  # digits are not mirror-symmetric
        c.augment.gray_p = 0.0
        c.batch_size = 256
    elif preset in ("cifar10", "cifar10_folder"):
        if preset == "cifar10":
            c.data.name, c.data.tfds_name = "tfds", "cifar10"
        else:
            c.data.name = "image_folder"
        c.model.name = "resnet18"
        c.model.kwargs = resnet_kwargs("cifar", (2, 2, 2, 2))
        c.augment.crop_size = 32
        c.augment.scale = (0.08, 1.0)
        c.batch_size = 512
    elif preset == "stl10":
        c.data.name, c.data.tfds_name = "tfds", "stl10"
        c.model.name = "resnet18"
        c.model.kwargs = resnet_kwargs("imagenet", (2, 2, 2, 2))
        c.augment.crop_size = 96
        c.augment.blur_p = 0.5
        c.augment.strength = 1.0
        c.batch_size = 256
    elif preset == "imagenet":
        # Streamed: prepare the ImageNet folder (train/<wnid>/*, val/<wnid>/*) once with
        # python -m jssl.data.prepare --source=IMAGENET --out=OUT, then pass
        # --config.data.path=OUT. The host threads decode and resize the images to 256 px
        # (in the DCT domain first for JPEGs of 512 px and more); the 224 px random-resized
        # crops are made on the device.
        c.data.name = "arrayrecord"
        c.data.test_split = "val"
        c.data.image_size = 256
        c.data.num_threads = 32
        c.model.name = "resnet50"
        c.model.kwargs = resnet_kwargs("imagenet", (3, 4, 6, 3))
        c.model.dtype = "bfloat16"
        c.augment.crop_size = 224
        c.augment.blur_p = 0.5
        c.augment.strength = 1.0
        c.batch_size = 4096
        c.eval.batch_size = 1024
    else:
        raise ValueError(f"Unknown data preset {preset!r}; valid: {', '.join(DATA_PRESETS)}.")


def set_schedule(
    c: ml_collections.ConfigDict,
    *,
    optimizer: str,
    learning_rate: float,
    batch_size: int,
    num_epochs: float,
    weight_decay: float,
    warmup_epochs: float,
    probe_epochs: int | None = None,
) -> None:
    """Batch size, length and optimiser in one call (the block every method config sets)."""
    c.batch_size = batch_size
    c.num_epochs = num_epochs
    c.optim.name = optimizer
    c.optim.learning_rate = learning_rate
    c.optim.weight_decay = weight_decay
    c.optim.warmup_epochs = warmup_epochs
    if probe_epochs is not None:
        c.eval.probe_epochs = probe_epochs


def digits_schedule(c: ml_collections.ConfigDict) -> None:
    """The SimCLR digits schedule the two-view methods share on digits: AdamW lr 2e-3 at
    batch 256, 60 epochs (300 steps on the 1,437 training images), weight decay 1e-4,
    5 warm-up epochs, a 200-epoch linear probe."""
    set_schedule(
        c,
        optimizer="adamw",
        learning_rate=2e-3,
        batch_size=256,
        num_epochs=60.0,
        weight_decay=1e-4,
        warmup_epochs=5.0,
        probe_epochs=200,
    )


def parts_task_schedule(
    c: ml_collections.ConfigDict, preset: str, *, digits_batch_size: int, digits_epochs: float
) -> None:
    """Jigsaw and context prediction: AdamW on digits; SGD 0.1, wd 5e-4 (the papers') elsewhere."""
    if preset == "digits":
        set_schedule(
            c,
            optimizer="adamw",
            learning_rate=2e-3,
            batch_size=digits_batch_size,
            num_epochs=digits_epochs,
            weight_decay=1e-4,
            warmup_epochs=1.0,
            probe_epochs=200,
        )
    else:
        set_schedule(
            c,
            optimizer="sgd",
            learning_rate=0.1,
            batch_size=256,
            num_epochs=70.0 if preset == "imagenet" else 200.0,
            weight_decay=5e-4,
            warmup_epochs=2.0,
        )


CPU_PRESETS = ("cifar10", "cifar10_folder")


def apply_cpu(c: ml_collections.ConfigDict, preset: str) -> None:
    """A CIFAR-10 run that a 2-core CPU finishes in about 20 minutes (the ``cpu`` modifier):
    a narrow network (ResNet: width 16, one basic block per stage; ViT: ViT-Tiny's width at
    depth 6), 4 epochs with half an epoch of warm-up, and an evaluation fitted on 10,000
    training images. The method's own recipe stays."""
    if preset not in CPU_PRESETS:
        raise ValueError(
            f"The cpu modifier sizes the {' and '.join(CPU_PRESETS)} presets, not {preset!r} "
            "(digits is CPU-sized already): e.g. configs/simclr.py:cifar10_folder,cpu."
        )
    if c.model.name.startswith("vit"):
        c.model.kwargs.update(hidden=192, depth=6, num_heads=3, mlp_dim=768)
    else:
        c.model.kwargs.update(width=16, stage_sizes=(1, 1, 1, 1))
    c.num_epochs = 4.0
    c.num_steps = 0
    c.optim.warmup_epochs = 0.5
    c.log_every = 10
    c.checkpoint_every = 200
    c.eval.max_train_examples = 10_000


def apply_smoke(c: ml_collections.ConfigDict) -> None:
    """Seconds-long run for tests: a few steps, tiny batch, short evaluation."""
    c.num_steps = 4
    c.batch_size = 32
    c.log_every = 2
    c.checkpoint_every = 2
    c.optim.warmup_epochs = 0.0
    c.eval.batch_size = 128
    c.eval.probe_epochs = 5
    c.eval.max_train_examples = 512
