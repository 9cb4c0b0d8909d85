"""curate: training."""
