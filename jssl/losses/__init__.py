"""Pure loss functions of arrays; hyperparameters are keyword-only.

Every loss is written on the *global* batch: under ``jax.jit`` with the batch
sharded over the mesh, XLA inserts the collectives, so negatives, centres and
marginals are global without hand-written all-gathers.

One module per family; each defines ``__all__`` and is re-exported here.
"""

from jssl.losses.cluster_heads import *  # noqa: F403
from jssl.losses.clustering import *  # noqa: F403
from jssl.losses.contrastive import *  # noqa: F403
from jssl.losses.dinov3 import *  # noqa: F403
from jssl.losses.distillation import *  # noqa: F403
from jssl.losses.ijepa import *  # noqa: F403
from jssl.losses.infonce import *  # noqa: F403
from jssl.losses.koleo import *  # noqa: F403
from jssl.losses.lejepa import *  # noqa: F403
from jssl.losses.masked import *  # noqa: F403
from jssl.losses.pretext import *  # noqa: F403
from jssl.losses.prototypes import *  # noqa: F403
from jssl.losses.redundancy import *  # noqa: F403
from jssl.losses.siamese import *  # noqa: F403
