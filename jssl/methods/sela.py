"""SeLa (Asano et al., 2020): self-labelling by optimal transport.

Alternates two steps over training:

- learning step (every train step, jitted): cross-entropy of each of H
  clustering heads against its current pseudo-labels, which live in
  ``state.method_state["labels"]`` ([H, N] int32, or [H, N, K] float32 for soft
  labels) and are gathered on device by ``batch["index"]``. One augmented view
  per image (the SimCLR policy of ``config.augment``).
- labelling step (the host object's ``update``, on a schedule): the network scores
  the whole training set (eval mode, un-augmented, jitted, batched), and for
  every head ``sinkhorn_knopp(log p, epsilon=1 / lambda)`` solves the
  equal-size assignment; soft labels are Q itself, hard labels round Q so
  that every cluster gets exactly its share (``balanced_assignment``; argmax_k
  Q with ``config.sela.balanced_labels=False``, which early in training, when
  Q is diffuse, gives clusters of 30 to 260 images where 144 are asked for).

Decisions:

- Initial labels are a random equipartition per head (the paper's start),
  and the first labelling runs right after the first update (with a warm-up
  the learning rate starts at 0, so that is the untrained network's view):
  random features already group similar images, which gives the learning
  step a better start than memorising random labels. The L label updates run
  after updates ``max(1, round(i * T / L))``, i = 0..L-1, of a T-step run.
- The labels are method state, so they are saved in every checkpoint and a
  resumed run continues with exactly the labels it had (no relabelling at
  start).
- The best head is chosen without labels: the lowest EMA of its training loss
  (``method_state["head_loss"]``); evaluation reports that head's clustering
  ACC / NMI / ARI on the test split.

What SeLa shares with SCAN (the multi-head model, head loss, collapse
alarm) is in ``jssl.methods.parts``; the heads are evaluated by the
``cluster_heads`` evaluator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jssl import evaluation, losses, sharding
from jssl.checks import MAX_STEPS, NON_NEGATIVE, POSITIVE, boolean, integer, numbers, one_of, show
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import DataInfo, HostObject, Method, apply_train
from jssl.models import EncoderWithHead
from jssl.sinkhorn import balanced_assignment, sinkhorn_knopp


def label_update_steps(total_steps: int, num_updates: int, power: float = 1.0) -> tuple[int, ...]:
    """Steps (updates applied) after which the labels are recomputed.

    Update i of L comes after max(1, round(T (i / L)^power)) updates of a T-step
    run: evenly spread for power 1 (SeLa), denser early for power > 1, while
    the features and the labels change fastest. Coinciding steps merge.
    """
    if num_updates < 1:
        raise UserError(f"config.sela.num_label_updates must be >= 1, got {num_updates}.")
    if power <= 0:
        raise UserError(f"config.sela.label_schedule_power must be > 0, got {power}.")
    steps = {
        max(1, int(round(total_steps * (i / num_updates) ** power))) for i in range(num_updates)
    }
    return tuple(sorted(s for s in steps if s <= total_steps))


def _check_config(config: ml_collections.ConfigDict) -> None:
    s = config.sela
    if s.label_mode not in ("hard", "soft"):
        raise UserError(f"config.sela.label_mode must be 'hard' or 'soft', got {s.label_mode!r}.")
    if s.lam <= 0:
        raise UserError(f"config.sela.lam (lambda = 1 / epsilon) must be > 0, got {s.lam}.")
    if s.class_weights and len(s.class_weights) != s.num_clusters:
        raise UserError(
            f"config.sela.class_weights has {len(s.class_weights)} entries but "
            f"num_clusters={s.num_clusters}; give one weight per cluster or () for uniform."
        )


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    _check_config(config)
    return parts.build_clustering_model(
        config, num_heads=config.sela.num_heads, num_clusters=config.sela.num_clusters
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    return parts.one_view(key, batch["image"], **parts.simclr_policy(config)), batch["index"]


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Running head losses, the label-update count and the initial labels of ``run``'s N
    examples (``initial_labels``, [H, N] or [H, N, K])."""
    return {
        "head_loss": jnp.zeros((config.sela.num_heads,), jnp.float32),
        "label_updates": jnp.zeros((), jnp.int32),
        "labels": jnp.asarray(initial_labels(run.num_examples, config)),
    }


def initial_labels(num_examples: int, config: ml_collections.ConfigDict) -> np.ndarray:
    """A random equipartition per head (SeLa's start): [H, N] int32, or one-hot [H, N, K]."""
    s = config.sela
    rng = np.random.default_rng((config.seed, 0x5E1A))
    base = np.arange(num_examples) % s.num_clusters
    labels = np.stack([rng.permutation(base) for _ in range(s.num_heads)]).astype(np.int32)
    if s.label_mode == "soft":
        return np.eye(s.num_clusters, dtype=np.float32)[labels]
    return labels


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    momentum = config.sela.head_loss_momentum

    def loss_fn(params, batch_stats, views, method_state, step, key):
        x, index = views
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)  # [H, B, K]
        targets = jnp.take(method_state["labels"], index, axis=1)  # [H, B] or [H, B, K]
        per_head = losses.pseudo_label_cross_entropy(logits, targets)  # [H]
        method_state = parts.update_head_loss(method_state, per_head, step, momentum)
        hard = targets if targets.ndim == 2 else jnp.argmax(targets, axis=-1)
        agreement = jnp.mean(jnp.argmax(logits, axis=-1) == hard, axis=-1)  # [H]
        metrics = {
            **parts.head_metrics(logits, per_head),
            "label_agreement": agreement[jnp.argmin(per_head)],
            "label_updates": method_state["label_updates"].astype(jnp.float32),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return jnp.mean(per_head), (batch_stats, method_state, metrics)

    return loss_fn


class SelaLabelling(HostObject):
    """SeLa's host-side state: the relabelling schedule and the compiled Sinkhorn labelling.

    ``update(state, step)`` relabels after the updates ``label_update_steps``
    gives: the network's eval-mode logits of every training image
    (``predict``), then one Sinkhorn per head (``lax.map`` bounds memory).
    When the N examples split evenly over the devices, the logits, the Sinkhorn
    (its column sums become all-reduces) and the label table in the train state
    are all split by example (``method_state_specs``): a device holds N / D rows
    of each, and no host holds the [N, H, K] logits. Otherwise all is replicated.
    """

    def __init__(self, config: ml_collections.ConfigDict, run, ctx):
        s = config.sela
        n = run.num_examples
        if s.num_clusters > n:
            raise UserError(f"config.sela.num_clusters={s.num_clusters} exceeds the {n} examples.")
        self.due = frozenset(
            label_update_steps(run.total_steps, s.num_label_updates, s.label_schedule_power)
        )
        self.train, self.predict, self.phase = ctx.train, ctx.predict, ctx.phase
        weights = np.asarray(s.class_weights, np.float32) if s.class_weights else None

        def relabel(logits):  # [H, N, K] -> [H, N] or [H, N, K]
            def one_head(head_logits):
                q = sinkhorn_knopp(
                    jax.nn.log_softmax(head_logits, axis=-1),
                    epsilon=1.0 / s.lam,
                    num_iters=s.sinkhorn_iters,
                    class_weights=weights,
                    tol=s.sinkhorn_tol or None,
                )
                if s.label_mode == "soft":
                    return q
                if s.balanced_labels:
                    return balanced_assignment(q, class_weights=weights)
                return jnp.argmax(q, axis=-1).astype(jnp.int32)

            return jax.lax.map(one_head, logits)

        mesh = ctx.mesh
        self.split = bool(method_state_specs(config, run, mesh))
        rep = sharding.replicated(mesh)
        examples = lambda axis: jax.sharding.NamedSharding(  # noqa: E731
            mesh, jax.sharding.PartitionSpec(*([None] * axis), sharding.DATA_AXIS)
        )
        self._relabel = jax.jit(
            lambda logits: relabel(jnp.swapaxes(logits, 0, 1)),  # [N, H, K] -> [H, N, K]
            in_shardings=examples(0) if self.split else rep,
            out_shardings=examples(1) if self.split else rep,
        )

    def relabel(self, state, step: int | None = None):
        """SeLa's labelling step: Sinkhorn on log p of the whole training set, per head.
        With the examples split over the devices, the logits stay where the Predictor
        computed them and the labels are made there."""
        variables = evaluation.model_variables(state.params, state.batch_stats)
        predict = self.predict.sharded if self.split else self.predict
        after = "" if step is None else f" after step {step}"
        with self.phase(f"SeLa: relabelling the training images{after}") as report:
            logits = predict(  # [N, H, K]
                variables, self.train, evaluation.evaluators.head_logits, progress=report
            )
            labels = jax.block_until_ready(self._relabel(logits))
        ms = state.method_state
        return state.replace(
            method_state={**ms, "labels": labels, "label_updates": ms["label_updates"] + 1}
        )

    def update(self, state, step: int):
        return self.relabel(state, step) if step in self.due else state


def method_state_specs(config: ml_collections.ConfigDict, run, mesh) -> dict:
    """The label table ([H, N] or [H, N, K]) split by example over the mesh when N is a
    multiple of the device count (else replicated)."""
    if run.num_examples % mesh.devices.size:
        return {}
    return {"labels": jax.sharding.PartitionSpec(None, sharding.DATA_AXIS)}


def prepare(config: ml_collections.ConfigDict, run, ctx) -> SelaLabelling:
    return SelaLabelling(config, run, ctx)


SOFT_LABELS_GIB = 4  # the most soft labels per device


def check(values: dict) -> list[str]:
    weights, clusters = values.get("sela.class_weights"), values.get("sela.num_clusters")
    if weights and clusters is not None and len(weights) != clusters:
        return [
            f"sela.class_weights={show(weights)}: {len(weights)} weights for "
            f"num_clusters={clusters}; give one per cluster, or () for equal sizes"
        ]
    return []


def data_problems(config: ml_collections.ConfigDict, data: DataInfo) -> list[str]:
    s, n, out = config.sela, data.num_examples, []
    if data.total_steps is not None and s.num_label_updates > data.total_steps:
        out.append(
            f"sela.num_label_updates={s.num_label_updates}: more labelling steps "
            f"than the run's {data.total_steps} steps; use at most {data.total_steps}"
        )
    if s.label_mode == "soft":
        devices = jax.device_count()
        split = devices if n % devices == 0 else 1
        gib = s.num_heads * n * s.num_clusters * 4 / 2**30 / split
        if gib > SOFT_LABELS_GIB:
            where = f"split over {devices} devices" if split > 1 else "on every device"
            out.append(
                f"sela.label_mode='soft': {s.num_heads} heads x {n} examples x {s.num_clusters} "
                f"clusters of float32 labels are {gib:.1f} GiB per device ({where}; more than "
                f"{SOFT_LABELS_GIB} GiB); use --config.sela.label_mode=hard "
                f"({s.num_heads * n * 4 / 2**30 / split:.2f} GiB of int32 labels per device)"
            )
    return out


SELA = Method(
    name="sela",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    method_state_specs=method_state_specs,
    prepare=prepare,
    collapse_warnings=parts.cluster_collapse_warnings("sela"),
    evaluators=parts.CLUSTERING_EVALUATORS,
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.clustering_fields("sela"),
        "sela.num_heads": integer(1, 1024),
        "sela.lam": POSITIVE,
        "sela.sinkhorn_iters": integer(1, 10**6),
        "sela.sinkhorn_tol": NON_NEGATIVE,
        "sela.num_label_updates": integer(1, MAX_STEPS),
        "sela.label_schedule_power": POSITIVE,
        "sela.label_mode": one_of(("hard", "soft"), "sela.label_mode"),
        "sela.balanced_labels": boolean,
        "sela.class_weights": numbers(POSITIVE),
    },
    check=check,
    data_problems=data_problems,
)
