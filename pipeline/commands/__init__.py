"""One module per `curate` command group: argument parsing (`register`) and the typed function it calls."""
