"""``python -m jssl.report --workdir W [--workdir W2 ...]``: a run report to open in a browser.

Writes ``W/report/index.html`` (``--out`` elsewhere) and its PNGs: one static
page, no script and nothing fetched from the network, opened from disk. It
shows the run's config, versions, devices and wall time; the final evaluation
against the untrained network; the curves of metrics.jsonl (loss, learning
rate, gradient norm, the method's collapse monitors, the evaluation during
training); nearest-neighbour retrieval; a 2-D map of the test embeddings
(PCA, or t-SNE with ``--map tsne``); for clustering methods the matched
confusion matrix, the cluster sizes and each cluster's most confident images;
the views the train step makes; and the method's own pictures (ViT attention,
reconstructions). With several workdirs, the tables are side by side and the
curves overlaid. Pictures are drawn with matplotlib (``jssl.plotting``).
"""

from jssl.report.build import build_report
from jssl.report.main import main

__all__ = ["build_report", "main"]
