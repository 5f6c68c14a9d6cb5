"""Colorization configs (Zhang et al. 2016): ``--config=configs/colorization.py:PRESET[,smoke]``.

Presets: digits (default; grayscale, so ab is 0 everywhere and the task is
trivial: kept so every method runs on the same data), cifar10 (tfds),
cifar10_folder (--config.data.path=DIR), stl10, imagenet.
``--config.colorization.target=classification`` predicts quantised ab bins with
class rebalancing, as the paper.
"""

import ml_collections

from configs import common
from configs.denoising import apply_recovery_preset, decoder_block


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, modifiers = common.parse_arg(arg)
    c = common.base_config("colorization")
    common.apply_data_preset(c, preset)
    c.decoder = decoder_block()
    c.colorization = ml_collections.ConfigDict()
    c.colorization.target = "regression"  # regression | classification
    c.colorization.bin_size = 10  # ab grid spacing of the classes
    c.colorization.soft_sigma = 5.0  # soft-encoding Gaussian over the 5 nearest bins
    c.colorization.rebalance = True
    c.colorization.rebalance_mix = 0.5  # lambda: weights ((1 - l) p + l / Q)^-1
    c.colorization.prior_momentum = 0.99  # EMA of the bins' frequencies over batches
    c.colorization.decode_temperature = 0.38  # annealed mean
    apply_recovery_preset(c, preset)
    c.augment.gray_p = 0.0  # grayscale views would have no colour to predict
    if "cpu" in modifiers:
        common.apply_cpu(c, preset)
    if "smoke" in modifiers:
        common.apply_smoke(c)
    return c
