"""curate: data curation and mixture planning for continued pretraining of language models.

The installed package; its parts are the folders at the top of the repository:
`curate.pipeline` (CLI, commands, runner and executors, catalog, reporting, service),
`curate.search`, `curate.stages`, `curate.scorers`, `curate.training`, `curate.mixtures` and
`curate.records` (docs/architecture.md has the layers). The CLI is `curate` (`curate.pipeline.cli`).
"""
