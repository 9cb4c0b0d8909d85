"""Reading a run's inputs: files, HTML, WARC, Hugging Face datasets, object storage; normalizing each record into a document row; the ingest stage."""
