"""jssl: self-supervised and unsupervised computer vision in JAX/Flax.

``import jssl`` gives the library: ``jssl.losses``, ``jssl.models``,
``jssl.augment``, ``jssl.evaluation``, ``jssl.data``, ``jssl.methods`` and the
training machinery (``jssl.trainer.train_and_evaluate``).
"""

from jssl import augment, data, evaluation, losses, models  # noqa: F401

__version__ = "0.1.0"
