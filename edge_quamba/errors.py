"""Errors a user can cause and fix: the CLI prints them as one line and exits non-zero.

Anything else (a bug) keeps its traceback.
"""


class EdgeQuambaError(Exception):
    """Base class: bad input that the user can correct. The message is one line and names the problem."""


class ConfigError(EdgeQuambaError):
    """A config.json (or another config) is missing, unreadable, or holds wrong or unsupported values."""


class CheckpointError(EdgeQuambaError):
    """Weights are missing, unreadable, corrupt, of the wrong shape, or not finite."""


class InputError(EdgeQuambaError):
    """A prompt, data file or option value cannot be used."""


class BackendUnavailableError(EdgeQuambaError):
    """The requested backend cannot run on this machine (never silently replaced by another)."""


class ValidationError(EdgeQuambaError):
    """An export's numbers on a runtime disagree with the quantized reference beyond the stated tolerances."""
