"""`curate serve`: runs, catalog and Ray jobs over authenticated HTTP (docs/serve.md)."""
