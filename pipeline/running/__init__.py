"""How a run executes: config, the stage registry, the one runner, executors (in-process and Ray), locks, progress."""
