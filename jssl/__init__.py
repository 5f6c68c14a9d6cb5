"""jssl: self-supervised and unsupervised computer vision in JAX/Flax.

``import jssl`` gives the library: ``jssl.losses``, ``jssl.models``,
``jssl.augment``, ``jssl.evaluation``, ``jssl.data``, ``jssl.methods`` and the
training machinery (``jssl.trainer.train_and_evaluate``).
"""

from jssl import xla_cpu

xla_cpu.prefer_cpu_flags()  # before JAX starts its backends

from jssl import augment, data, evaluation, losses, models  # noqa: E402, F401

__version__ = "0.1.0"
