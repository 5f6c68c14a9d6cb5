"""Scoring a clustering: with labels (ACC, NMI, ARI, AMI) and without them (label-free criteria).

With labels: Hungarian ACC (one cluster per class) when K equals the number of classes,
many-to-one ACC (each cluster to its majority class) otherwise; both are reported, with
NMI, ARI and AMI. Without labels, each criterion is "higher is better":

- ``generalization``: TURTLE's idea as a score: a linear classifier fitted on half of the
  examples to predict their clusters, its accuracy on the other half;
- ``silhouette``: mean silhouette of the clusters in the (cosine) feature space;
- ``balance``: entropy of the cluster sizes over log K (1: equal sizes);
- ``neg_objective``: minus the method's own final loss (comparable within a method and K).

``correlations`` says how well each criterion ranks runs as the labelled ACC does
(Spearman over the runs given), so a user without labels knows which to trust. ``rankme``
scores a feature space itself, before any clustering (to choose among runs or spaces).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import sklearn.linear_model
import sklearn.metrics

from jssl.cluster import heads
from jssl.evaluation import clustering, rank

CRITERIA = ("generalization", "silhouette", "balance", "neg_objective")


def acc_kind(num_clusters: int, num_classes: int) -> str:
    """Which ACC ``metrics`` reports as ``acc``: "Hungarian" when K == C, else "many-to-one"."""
    return "Hungarian" if num_clusters == num_classes else "many-to-one"


def metrics(labels, pred, *, num_classes: int, num_clusters: int) -> dict[str, float]:
    """Labelled scores of cluster assignments ``pred`` [N] against ``labels`` [N]; ``acc`` is
    the ACC of ``acc_kind``."""
    counts = dict(num_classes=num_classes, num_clusters=num_clusters)
    hungarian = float(clustering.cluster_accuracy(labels, pred, **counts))
    many = float(clustering.cluster_accuracy_many_to_one(labels, pred, **counts))
    return {
        "acc": hungarian if acc_kind(num_clusters, num_classes) == "Hungarian" else many,
        "acc_hungarian": hungarian,
        "acc_many_to_one": many,
        "nmi": float(clustering.nmi(labels, pred, **counts)),
        "ari": float(clustering.ari(labels, pred, **counts)),
        "ami": float(sklearn.metrics.adjusted_mutual_info_score(labels, pred)),
    }


def generalization(features, pred, *, seed: int = 0) -> float:
    """Held-out accuracy of a linear classifier that learns the clusters from half the rows."""
    x, pred = np.asarray(heads.normalize(features)), np.asarray(pred)
    order = np.random.default_rng(seed).permutation(len(x))
    fit, held = order[: len(x) // 2], order[len(x) // 2 :]
    if len(np.unique(pred[fit])) < 2:
        return 0.0 if len(np.unique(pred)) > 1 else 1.0
    model = sklearn.linear_model.LogisticRegression(max_iter=300, C=10.0)
    model.fit(x[fit], pred[fit])
    return float(np.mean(model.predict(x[held]) == pred[held]))


def silhouette(features, pred, *, seed: int = 0, max_examples: int = 5000) -> float:
    """Mean cosine silhouette (on at most ``max_examples`` rows; -1 for a single cluster)."""
    if len(np.unique(pred)) < 2:
        return -1.0
    return float(
        sklearn.metrics.silhouette_score(
            np.asarray(heads.normalize(features)),
            pred,
            metric="cosine",
            sample_size=min(max_examples, len(pred)),
            random_state=seed,
        )  # fmt: skip
    )


def balance(pred, num_clusters: int) -> float:
    """Entropy of the cluster sizes over log K: 1 for equal sizes, 0 for one cluster."""
    p = np.bincount(np.asarray(pred), minlength=num_clusters) / max(len(pred), 1)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)) / np.log(num_clusters))


def rankme(features, *, seed: int = 0, max_examples: int = 16384) -> float:
    """RankMe (``jssl.evaluation.rank.rankme``) of the L2-normalised rows (at most
    ``max_examples`` of them, drawn with ``seed``): the effective number of directions the
    space uses, in [1, D]."""
    x = np.asarray(features)
    if len(x) > max_examples:
        x = x[np.random.default_rng(seed).permutation(len(x))[:max_examples]]
    return float(rank.rankme(heads.normalize(x)))


def criteria(features, pred, *, num_clusters: int, objective: float, seed: int = 0) -> dict:
    """Every label-free criterion of one clustering (see the module doc)."""
    return {
        "generalization": generalization(features, pred, seed=seed),
        "silhouette": silhouette(features, pred, seed=seed),
        "balance": balance(pred, num_clusters),
        "neg_objective": -float(objective),
    }


def correlations(rows: list[dict], *, target: str = "acc") -> dict[str, float]:
    """Spearman correlation of each criterion with ``target`` over ``rows`` (dicts holding
    both); nan where fewer than 3 rows or a constant column."""
    out = {}
    for name in CRITERIA:
        a = [r[name] for r in rows]
        b = [r[target] for r in rows]
        if len(rows) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            out[name] = float("nan")
        else:
            out[name] = float(scipy.stats.spearmanr(a, b).statistic)
    return out
