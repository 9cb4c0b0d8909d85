"""plan.json's JSON Schema and checks live with the plan record (`records/plan.py`, which the
trainer, pack and search read plans through); the planner's callers import them from here too."""

from curate.records.plan import SCHEMA_PATH, PlanValidationError, plan_schema, validate_plan  # noqa: F401
