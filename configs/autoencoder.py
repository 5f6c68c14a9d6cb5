"""Bottleneck autoencoder configs: ``--config=configs/autoencoder.py:PRESET[,smoke]``.

Presets: digits (default), cifar10 (tfds), cifar10_folder (--config.data.path=DIR),
stl10, imagenet. The bottleneck: ``--config.autoencoder.bottleneck=lowdim|sparse|vq``.
"""

import ml_collections

from configs import common
from configs.denoising import apply_recovery_preset, decoder_block


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("autoencoder")
    common.apply_data_preset(c, preset)
    c.decoder = decoder_block()
    c.autoencoder = ml_collections.ConfigDict()
    c.autoencoder.bottleneck = "lowdim"  # lowdim | sparse | vq
    c.autoencoder.code_dim = 32  # lowdim: size of the linear code
    c.autoencoder.sparse_dim = 256  # sparse: size of the overcomplete ReLU code
    c.autoencoder.sparsity = "topk"  # sparse: topk | l1
    c.autoencoder.top_k = 16  # topk: active units per example
    c.autoencoder.l1_weight = 0.05  # l1: weight of mean |code|
    c.autoencoder.num_codes = 128  # vq: codebook size K
    c.autoencoder.code_channels = 32  # vq: code vector size D
    c.autoencoder.commitment = 0.25  # vq: beta (van den Oord et al.)
    # vq: nearest code by cosine (unit-norm codes). On digits (150 steps) it left 31 of 128
    # codes dead (perplexity 25) against 92 dead (perplexity 3) for the Euclidean lookup.
    c.autoencoder.normalize_codes = True
    c.autoencoder.usage_momentum = 0.99  # vq: EMA of each code's share of assignments
    c.autoencoder.dead_threshold = 0.01  # vq: dead = share below threshold / K
    apply_recovery_preset(c, preset)
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
