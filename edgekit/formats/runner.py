"""Runners: load one artifact with its own runtime and run batches through it.

Each runner imports only its runtime, so `edgekit eval`/`bench` on a device need only that
runtime installed. `predict` takes preprocessed float32 NHWC input and returns float32 scores;
integer-I/O models are fed quantized input and their output is dequantized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError, regular_file


class Runner:
    """Base: subclasses implement `_run(batch)` and set `input_shape` (H, W, C) and
    `input_spec` (dtype, scale, zero_point); `predict` chunks the input."""

    format = ""
    execution = ""  # which provider/device runs it, for the record
    chunk = 64
    # Activation memory grows with the batch: 64 MobileNetV2 224² inputs held ~1 GB in
    # TensorFlow's allocator for the rest of the run. Batches stay under this many input elements.
    chunk_elements = 1 << 20
    input_shape: tuple[int, int, int]
    input_spec: dict
    fixed_batch: int | None = None  # set when the model takes only batches of this size

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """One call of the runtime on one batch: what the latency harness times."""
        return self._run(batch)

    def predict(self, x: np.ndarray) -> np.ndarray:
        size = self.fixed_batch or max(1, min(self.chunk, self.chunk_elements // max(1, int(np.prod(x.shape[1:])))))
        outputs = [self._run_padded(x[i:i + size], size) for i in range(0, len(x), size)]
        return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)

    def _run_padded(self, batch: np.ndarray, size: int) -> np.ndarray:
        """A model exported with a static batch takes exactly that many: the last, short batch is
        padded with copies of its last sample, and their scores dropped."""
        if not self.fixed_batch or len(batch) == size:
            return self._run(batch)
        padding = np.repeat(batch[-1:], size - len(batch), axis=0)
        return self._run(np.concatenate([batch, padding]))[:len(batch)]


def sniff_format(path: Path) -> str | None:
    """What the bytes say the file is (each format's runner.looks_like reads the first 64 bytes)."""
    from edgekit.formats import REGISTRY

    with open(path, "rb") as f:
        head = f.read(64)
    return next((name for name, fmt in REGISTRY.items() if fmt.part("sniff")(head)), None)


def artifact_format(path: Path) -> str:
    """The runtime an artifact needs, from its extension, checked against its content."""
    from edgekit.formats import REGISTRY, format_of_suffix

    path = Path(path)
    fmt = format_of_suffix(path.suffix)
    if fmt is None:
        raise InputError(f"{path}: unknown artifact type; expected one of "
                         f"{', '.join(f.suffix for f in REGISTRY.values())}")
    regular_file(path, "artifact")
    content = sniff_format(path)
    if content is not None and content != fmt.name:
        article = "an" if content[0] in "aeiou" else "a"
        raise InputError(f"{path}: the extension says {fmt.name} but the content is {article} {content} model; "
                         f"rename it to {path.stem}{REGISTRY[content].suffix}")
    return fmt.name


THREADS_ENV = "EDGEKIT_THREADS"


def default_threads() -> int | None:
    """Threads a runtime gets when the caller names none: EDGEKIT_THREADS (a sweep cell sets it so
    cells running side by side do not each take every core), else the runtime's own default."""
    import os

    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def open_runner(path: Path, threads: int | None = None, providers: list[str] | None = None,
                openvino_device: str | None = None) -> Runner:
    """Open an artifact by its extension; a file its runtime rejects is bad input (exit 2).
    `providers` (ONNX Runtime) and `openvino_device` come from a device profile; each runner
    takes what applies to its runtime."""
    from edgekit.formats import get_format

    path = Path(path)
    kind = artifact_format(path)
    threads = threads or default_threads()
    for companion in get_format(kind).suffixes[1:]:  # an OpenVINO .xml needs its .bin
        regular_file(path.with_suffix(companion), f"{path} needs its weights beside it:", InputError)
    options = {k: v for k, v in (("providers", providers), ("device", openvino_device)) if v}
    return load_checked(path, kind, lambda: get_format(kind).part("runner")(path, threads, **options))


def load_checked(path: Path, kind: str, load):
    """Run `load`; a runtime's own exception for a bad file becomes one line, exit 2."""
    from edgekit.errors import EdgekitError

    try:
        return load()
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001 - each runtime raises its own types for a bad file
        raise InputError(f"{path} cannot be loaded by {kind}: it is corrupt or not a {path.suffix} model "
                         f"({runtime_reason(exc)})") from None


def runtime_reason(exc: BaseException) -> str:
    """The line of a runtime's message that says what is wrong: OpenVINO puts a stack of
    "Exception from src/…cpp:NN:" and "Check … failed at …" lines before it."""
    from edgekit.errors import first_line

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (said[0][:200] if said else first_line(exc, 200))
