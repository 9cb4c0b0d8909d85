"""Mixture search from proxy runs and side-by-side comparison of plans (`curate compare`, `curate search`)."""
