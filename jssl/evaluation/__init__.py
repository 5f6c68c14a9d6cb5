"""Evaluation of frozen representations: features, kNN, linear probe, clustering."""

from jssl.evaluation.clustering import (
    ari,
    cluster_accuracy,
    cluster_accuracy_many_to_one,
    contingency_matrix,
    kmeans,
    nmi,
)
from jssl.evaluation.evaluate import evaluate_features
from jssl.evaluation.features import extract_features
from jssl.evaluation.knn import knn_accuracy, l2_normalize
from jssl.evaluation.linear_probe import linear_probe, standardize

__all__ = [
    "ari",
    "cluster_accuracy",
    "cluster_accuracy_many_to_one",
    "contingency_matrix",
    "evaluate_features",
    "extract_features",
    "kmeans",
    "knn_accuracy",
    "l2_normalize",
    "linear_probe",
    "nmi",
    "standardize",
]
