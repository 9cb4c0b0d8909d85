"""Reading a run back: the DuckDB catalog over its shards, the read-only filesystem under it, held-out eval sets."""
