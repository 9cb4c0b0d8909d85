"""curate: mixtures."""
