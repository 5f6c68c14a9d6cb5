"""Clustering losses (SCAN, SeLa cross-entropy on pseudo-labels)."""

__all__: list[str] = []
