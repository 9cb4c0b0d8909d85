"""curate: pipeline."""
