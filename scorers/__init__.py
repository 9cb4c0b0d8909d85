"""curate: scorers."""
