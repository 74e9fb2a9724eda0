"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class MlflowDLError(Exception):
    """Base of every error that is the user's input, not a bug."""


class ConfigError(MlflowDLError, ValueError):
    """A parameter is out of range or malformed."""


class DataError(MlflowDLError, ValueError):
    """The data set cannot be used as given."""


class TrainingError(MlflowDLError, RuntimeError):
    """Training diverged (NaN or infinite loss)."""


class PromotionError(MlflowDLError):
    """The registry cannot promote what was asked (no runs, other data, unsafe model, new signature)."""
