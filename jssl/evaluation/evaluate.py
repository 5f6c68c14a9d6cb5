"""All evaluations of a frozen representation in one call."""

from __future__ import annotations

import jax
import numpy as np

from jssl.evaluation.clustering import ari, cluster_accuracy, kmeans, nmi
from jssl.evaluation.knn import knn_accuracy
from jssl.evaluation.linear_probe import linear_probe


def evaluate_features(
    train_features: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_features: jax.Array | np.ndarray,
    test_labels: jax.Array | np.ndarray,
    *,
    num_classes: int,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    probe_epochs: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """kNN, linear probe and k-means clustering scores of frozen features.

    Clustering is k-means with ``num_classes`` clusters on the test features,
    scored against the test labels (Hungarian accuracy, NMI, ARI).

    Args:
      train_features: [N_train, D] features.
      train_labels: [N_train] integer labels in [0, num_classes).
      test_features: [N_test, D] features.
      test_labels: [N_test] integer labels in [0, num_classes).
      num_classes: number of classes.
      knn_k: kNN neighbours.
      knn_temperature: kNN vote temperature.
      probe_epochs: linear probe epochs.
      seed: seed of the linear probe and k-means.

    Returns:
      {'knn_top1', 'linear_top1', 'cluster_acc', 'nmi', 'ari'} as Python floats.
    """
    test_labels = np.asarray(test_labels)
    knn = knn_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        k=knn_k,
        temperature=knn_temperature,
    )
    probe = linear_probe(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        epochs=probe_epochs,
        seed=seed,
    )
    clusters = kmeans(test_features, num_clusters=num_classes, seed=seed)
    counts = dict(num_classes=num_classes, num_clusters=num_classes)
    return {
        "knn_top1": float(knn),
        "linear_top1": probe["test_top1"],
        "cluster_acc": float(cluster_accuracy(test_labels, clusters, **counts)),
        "nmi": float(nmi(test_labels, clusters, **counts)),
        "ari": float(ari(test_labels, clusters, **counts)),
    }
