"""The project's own exceptions: raised before any work starts, each message says what to change."""


class VGGError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(VGGError, ValueError):
    """An impossible network configuration or argument."""


class InputError(VGGError, ValueError):
    """Data given to a network or a function does not fit it."""


class DataError(VGGError):
    """The Fashion-MNIST files are missing, truncated or altered."""


class WeightsError(VGGError):
    """A weights file or dict does not fit the network it is loaded into."""


class BackendUnavailable(VGGError, ImportError):
    """A backend's framework is not installed."""


class TrainingDiverged(VGGError, FloatingPointError):
    """The loss became NaN or infinite."""
