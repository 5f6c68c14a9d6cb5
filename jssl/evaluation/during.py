"""Evaluation during training: a cheap kNN and RankMe on fixed subsets, every
``config.eval.every_steps``.

The trainer calls ``DuringTraining.__call__`` at every multiple of
``config.eval.every_steps`` and logs what it returns (kind ``"eval_during"`` in
metrics.jsonl and TensorBoard). It only reads the state: an eval-mode forward
pass through the run's ``Predictor``, no random numbers drawn, nothing written
back, so the training trajectory is the same with it or without it. The subsets
are drawn once from ``config.seed`` (``jssl.data.take_subset``), so a resumed run
scores the same examples as before its interruption.

RankMe of the test subset's features is the label-free collapse monitor of every method:
``collapse_warnings`` warns when it falls under ``RANKME_WARN_FRACTION`` of the run's first
value (the trainer shows them as it shows a method's own; a resumed run reads its first
value from metrics.jsonl).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jssl.data.core import ImageSource, take_subset
from jssl.evaluation.evaluators import EvalContext, knn, rankme_score, teacher_knn
from jssl.evaluation.predict import Predictor

KIND = "eval_during"  # the metrics.jsonl kind of these records
RANKME_WARN_FRACTION = 0.25  # as LeJEPA's lejepa.rankme_warn_fraction


@dataclasses.dataclass
class DuringTraining:
    """kNN top-1 of the student (and of the EMA teacher when the method evaluates one) on
    at most ``config.eval.during_max_examples`` training and as many test examples, and
    the student's RankMe on those test examples."""

    config: ml_collections.ConfigDict
    predict: Predictor
    train: ImageSource
    test: ImageSource
    num_classes: int
    networks: tuple[str, ...]
    teacher: str | None = None  # the method-state entry of the EMA copy (Method.teacher)
    first_rankme: float | None = None  # the run's first RankMe (collapse_warnings)

    @classmethod
    def build(
        cls,
        config: ml_collections.ConfigDict,
        predict: Predictor,
        train: ImageSource,
        test: ImageSource,
        *,
        num_classes: int,
        evaluators: tuple[str, ...],
        teacher: str | None = None,
        first_rankme: float | None = None,
    ) -> DuringTraining:
        """The subsets of ``train`` and ``test`` (the run's splits) scored during training;
        ``first_rankme``: the run's first RankMe where an earlier session logged one."""
        cap = config.eval.during_max_examples
        networks = ("student", "teacher") if "teacher_knn" in evaluators else ("student",)
        return cls(
            config=config,
            predict=predict,
            # Other seeds than the final evaluation's subset: these are a second, smaller draw.
            train=take_subset(train, cap, seed=config.seed + 1),
            test=take_subset(test, cap, seed=config.seed + 2),
            num_classes=num_classes,
            networks=networks,
            teacher=teacher,
            first_rankme=first_rankme,
        )

    def __call__(self, state) -> dict[str, float]:
        """{"knn_top1"[, "teacher_knn_top1"], "rankme"} of ``state`` (read only): the
        ``knn``, ``teacher_knn`` and ``rankme`` evaluators on the subsets."""
        ctx = EvalContext(
            config=self.config,
            predict=self.predict,
            state=state,
            train=self.train,
            test=self.test,
            num_classes=self.num_classes,
            class_names=(),
            teacher=self.teacher,
        )
        evaluators = {"student": knn, "teacher": teacher_knn}
        results = {
            key: metric.value
            for network in self.networks
            for key, metric in evaluators[network](ctx).items()
        }
        results["rankme"] = rankme_score(ctx)["rankme"].value
        return results

    def collapse_warnings(self, results: dict[str, float]) -> list[str]:
        """A warning when ``results``' RankMe is under RANKME_WARN_FRACTION of the run's
        first RankMe (``first_rankme``; without one, the first call records its own)."""
        rank = results["rankme"]
        if self.first_rankme is None:
            self.first_rankme = rank
        if rank >= RANKME_WARN_FRACTION * self.first_rankme:
            return []
        return [
            f"RankMe {rank:.2f} of the evaluation subset fell under {RANKME_WARN_FRACTION:g} of "
            f"its first value ({self.first_rankme:.2f}): the features are collapsing onto a "
            "few directions"
        ]
