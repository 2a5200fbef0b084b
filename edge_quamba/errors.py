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


class ConformanceError(EdgeQuambaError):
    """An exported graph breaks a rule of the runtime it is for (the TensorRT graph: edge_quamba/onnx/
    tensorrt_rules.json), so it is not written; the message names the rules and the first nodes."""


class OutputError(EdgeQuambaError):
    """An output folder cannot be written (read-only, full, busy), or writing it would replace data that
    edge-quamba did not write."""


class Terminated(BaseException):
    """SIGTERM / SIGHUP arrived while an output folder was being written (raised by the handler that
    :func:`edge_quamba.atomic.atomic_output_dir` installs, so that the temporary folder is removed on the way out).
    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def named(option: str, value: object) -> str:
    """How a message names what the user typed: ``--model DIR``, or ``--model_args path=DIR`` (option ends in =)."""
    return f"{option}{value}" if option.endswith("=") else f"{option} {value}"
