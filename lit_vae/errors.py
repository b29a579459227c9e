"""The LitVAEError family: one-line messages that name the file or key and say the fix."""


class LitVAEError(Exception):
    """Base of every error lit-vae reports to the user without a traceback."""


class ConfigError(LitVAEError):
    """A bad option, config key or manifest entry."""


class DataError(LitVAEError):
    """A missing file or branch, a NaN, an empty selection."""


class NumericalError(LitVAEError):
    """A non-finite loss during training."""


class OutputError(LitVAEError):
    """An output path that cannot be written."""


class ImplausibleArchitecture(ConfigError):
    """A hyper-parameter combination the architecture rule refuses (sweeps record it as pruned)."""
