"""curate: stages."""
