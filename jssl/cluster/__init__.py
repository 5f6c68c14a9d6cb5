"""Clustering on frozen features: ``python -m jssl.cluster`` and its parts.

``methods``: k-means, TEMI, TURTLE, SCAN's and SeLa's heads (``METHODS``), trained on
``jssl.features`` files without labels; ``select``: labelled metrics and label-free
criteria; ``heads``: the head networks and their jitted training loop.
"""

from jssl.cluster.methods import METHODS, Fitted, fit, options
from jssl.cluster.select import CRITERIA, correlations, criteria, metrics

__all__ = ["CRITERIA", "METHODS", "Fitted", "correlations", "criteria", "fit", "metrics", "options"]
