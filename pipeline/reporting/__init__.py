"""What a run tells its user: `curate stats` tables, per-stage summaries and the HTML report."""
