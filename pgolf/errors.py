"""User-facing errors: anything a user can cause (bad file, bad flag, over budget).

The CLI catches :class:`PgolfError` and prints its message as one line on stderr with
exit code 1 (a class's ``exit_code`` where it sets one: 2 for :class:`RangeError`), never
a traceback. Library code raises the most specific subclass and puts
the offending file or value in the message.
"""


class PgolfError(Exception):
    """An expected failure caused by the user's input; the message is shown as is."""


class ShardError(PgolfError):
    """A token shard is malformed (bad magic/version, size mismatch, bad token ids)."""


class ConfigError(PgolfError):
    """An unknown or ill-typed configuration key, preset or flag value."""


class RangeError(ConfigError):
    """A setting outside its allowed range (or NaN/inf): a usage error, exit code 2."""

    exit_code = 2


class ArtifactError(PgolfError):
    """A quantized artifact is corrupt, truncated, of another version or another model."""


class BudgetError(PgolfError):
    """Artifact plus counted code exceeds the byte budget."""
