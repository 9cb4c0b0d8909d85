"""The project's errors. A user-facing failure raises one of these with a message that says
what is wrong and what would be valid; the CLI prints it without a traceback."""


class CurateError(Exception):
    """Base of every error curate raises on purpose."""


class ConfigError(CurateError, ValueError):
    """A config value is invalid. `field` is its dotted path, e.g. `stages[2].threshold`. Also a
    `ValueError`, what a config dataclass raises for a bad value."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"config field `{field}`: {message}")
