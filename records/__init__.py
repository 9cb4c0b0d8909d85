"""The bottom layer: records and errors every other package may import (stages, scorers,
mixtures, training, pipeline), importing none of them.

- `records.errors`: `CurateError` (a user-facing failure the CLI prints without a traceback) and
  `ConfigError` (a config value is invalid; names the field).
- `records.counts`: a shard's `Counts` (with the conservation check) and a stage's `StageStats`
  (`RUN/<stage>/stats.json`), typed over the JSON the markers and stats files hold.
- `records.typed`: the one builder of typed config dataclasses from parsed YAML (`build`), with
  errors that name the field (run and train configs, recipes, the plan record).
- `records.plan`: plan.json as a typed record (`Plan`: phases, groups, the LR `Schedule`).
- `records.marker`: a task's completion marker (`Marker`, `MARKER_VERSION`), as `stages/shardio.py`
  reads it.
"""
