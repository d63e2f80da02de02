"""The error hierarchy. Each error carries the process exit code the CLI returns for it.

Exit codes (README, "Exit codes"): 0 success, 1 a gate failed, 2 bad input or usage, 3 internal error.
"""

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose. The message is one line, shown as is."""

    exit_code = EXIT_INTERNAL


class GateFailure(EdgekitError):
    """A check the user asked for found a regression (accuracy, latency, size). `report`: the
    report that was written, when there is one (the CLI shows it before the verdict)."""

    exit_code = EXIT_GATE_FAILED

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


class StageFailure(GateFailure):
    """A fine-tuning stage lost more accuracy than the tolerance: the run stops before exporting."""


class InputError(EdgekitError):
    """Bad input or usage: a file, option or data the user can fix."""

    exit_code = EXIT_BAD_INPUT


class ModelError(InputError):
    """The model file is missing, unreadable, or not a supported classifier."""


class DataError(InputError):
    """Calibration or validation data is missing, malformed, or does not fit the model."""


class OutputError(InputError):
    """The output folder cannot be written as asked (e.g. it holds artifacts, no --force)."""


class VerificationError(InputError):
    """An exported artifact does not reproduce the Keras model: the export is wrong."""


class ConversionError(InputError):
    """A converter cannot express the model in its format (e.g. unsupported ops): that format fails."""


class MissingDependencyError(InputError):
    """An optional dependency (an extra) is not installed."""


# --- raised by one package each, listed here so the whole hierarchy and its exit codes are in one place

class QATMismatch(GateFailure):
    """A QAT int8 file computes something else than the QAT model: a result asked for and not
    reached (exit 1). The pipeline leaves that file out, writes the rest and records this."""

    def __init__(self, message: str, check: dict):
        super().__init__(message)
        self.check = check


class StepKilled(InputError):
    """The system killed a step (e.g. out of memory): exit 2 with the step and the way out."""


class StepCrashed(EdgekitError):
    """A step failed with an unexpected error in its child process (a bug: exit 3)."""


class WontFit(InputError):
    """A step's estimated peak exceeds the memory available: refused before it starts."""


class ReportError(InputError, ValueError):
    """The first field of a report.json that breaks the schema, as "artifacts[2].accuracy.top1: why".
    A ValueError too: pydantic turns only those, raised in validators, into its own errors."""


class CellsFailed(EdgekitError):
    """Some cells failed: the sweep's files were written from the others (exit 1, like a gate)."""

    exit_code = EXIT_GATE_FAILED


class Interrupted(EdgekitError):
    """Ctrl-C or SIGTERM during the cells: finished cells are kept for the rerun."""

    exit_code = EXIT_INTERRUPTED


class BridgeUnavailable(ModelError):
    """This model cannot be rebuilt in tf_keras; the message names the layer and why.
    The loader catches it and keeps the Keras 3 model for the PTQ/export path."""


class Incompatible(InputError):
    """The device cannot run this artifact (exit 2): the message names why and the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for one-line errors (or its type name)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def require(module: str, extra: str):
    """Import an optional module, or raise a clear error naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install it with: pip install \"edgekit[{extra}]\""
        ) from exc


def regular_file(path, what: str, error: type[InputError] = InputError):
    """The path, if it names a regular file; else one line saying what it is instead. A FIFO
    named model.tflite would hang a reader, /dev/zero never ends, a folder is not a file."""
    import stat
    from pathlib import Path

    path = Path(path)
    check_path_name(path, what, error)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:  # too long a name, a loop of links, no permission
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or other special file")
        raise error(f"{what} {path} is not a regular file (it is {kind})")
    return path


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096  # Linux's NAME_MAX and PATH_MAX


def printable(text: str) -> str:
    """Text whose undecodable bytes (a non-UTF-8 file name arrives as surrogates) show as \\xNN:
    printing it can never fail."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_path_name(path, what: str, error: type[InputError] = InputError) -> None:
    """A path the tools downstream can take: UTF-8 (TensorFlow and h5py encode names as UTF-8),
    names within 255 bytes and the whole within 4096, said before any file call fails on it."""
    text = str(path)
    shown = printable(text if len(text) <= 80 else f"{text[:40]}…{text[-30:]}")
    if printable(text) != text:
        raise error(f"{what} {shown}: the path is not valid UTF-8; rename it")
    if len(text.encode()) > MAX_PATH_BYTES:
        raise error(f"{what} {shown}: the path is over {MAX_PATH_BYTES} bytes")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in text.split("/")):
        raise error(f"{what} {shown}: a name in the path is over {MAX_NAME_BYTES} bytes")
