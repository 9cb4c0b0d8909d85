"""curate: the command line (cli.py) over commands/, running/, catalog/ and reporting/; the service in serve/."""
