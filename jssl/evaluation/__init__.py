"""Evaluation of frozen representations: features, kNN, linear probe, clustering."""

from jssl.evaluation.clustering import (
    ari,
    cluster_accuracy,
    cluster_accuracy_many_to_one,
    contingency_matrix,
    kmeans,
    nmi,
)
from jssl.evaluation.during import DuringTraining
from jssl.evaluation.evaluators import (
    DEFAULT_EVALUATORS,
    EVALUATORS,
    EvalContext,
    Metric,
    run_evaluators,
)
from jssl.evaluation.knn import knn_accuracy, l2_normalize
from jssl.evaluation.linear_probe import linear_probe, standardize
from jssl.evaluation.plots import (
    cluster_size_summary,
    cluster_sizes,
    histogram_text,
    matched_confusion_matrix,
    save_confusion_matrix,
)
from jssl.evaluation.predict import Predictor, model_variables, network_variables
from jssl.evaluation.rank import lidar, rankme

__all__ = [
    "DEFAULT_EVALUATORS",
    "DuringTraining",
    "EVALUATORS",
    "EvalContext",
    "Metric",
    "Predictor",
    "model_variables",
    "network_variables",
    "run_evaluators",
    "ari",
    "cluster_accuracy",
    "cluster_accuracy_many_to_one",
    "cluster_size_summary",
    "cluster_sizes",
    "contingency_matrix",
    "histogram_text",
    "kmeans",
    "knn_accuracy",
    "lidar",
    "l2_normalize",
    "linear_probe",
    "matched_confusion_matrix",
    "nmi",
    "rankme",
    "save_confusion_matrix",
    "standardize",
]
