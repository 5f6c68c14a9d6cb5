"""Evaluation during training: a cheap kNN on fixed subsets, every ``config.eval.every_steps``.

The trainer calls ``DuringTraining.__call__`` at every multiple of
``config.eval.every_steps`` and logs what it returns (kind ``"eval_during"`` in
metrics.jsonl and TensorBoard). It only reads the state: an eval-mode forward
pass through the run's ``Predictor``, no random numbers drawn, nothing written
back, so the training trajectory is the same with it or without it. The subsets
are drawn once from ``config.seed`` (``jssl.data.take_subset``), so a resumed run
scores the same examples as before its interruption.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jssl.data.core import ImageSource, take_subset
from jssl.evaluation.evaluators import EvalContext, knn, teacher_knn
from jssl.evaluation.predict import Predictor

KIND = "eval_during"  # the metrics.jsonl kind of these records


@dataclasses.dataclass
class DuringTraining:
    """kNN top-1 of the student (and of the EMA teacher when the method evaluates one) on
    at most ``config.eval.during_max_examples`` training and as many test examples."""

    config: ml_collections.ConfigDict
    predict: Predictor
    train: ImageSource
    test: ImageSource
    num_classes: int
    networks: tuple[str, ...]
    teacher: str | None = None  # the method-state entry of the EMA copy (Method.teacher)

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
    ) -> DuringTraining:
        """The subsets of ``train`` and ``test`` (the run's splits) scored during training."""
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
        )

    def __call__(self, state) -> dict[str, float]:
        """{"knn_top1"[, "teacher_knn_top1"]} of ``state`` (read only): the ``knn`` and
        ``teacher_knn`` evaluators on the subsets."""
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
        return {
            key: metric.value
            for network in self.networks
            for key, metric in evaluators[network](ctx).items()
        }
