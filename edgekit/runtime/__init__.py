"""Runners: load one artifact with its own runtime and run batches through it.

Each runner imports only its runtime, so `edgekit eval`/`bench` on a device need only that
runtime installed. `predict` takes preprocessed float32 NHWC input and returns float32 scores;
integer-I/O models are fed quantized input and their output is dequantized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError, regular_file

RUNNER_FOR_SUFFIX = {".tflite": "tflite", ".onnx": "onnx", ".xml": "openvino"}


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


def _runner_class(kind: str):
    if kind == "tflite":
        from edgekit.runtime.tflite import TFLiteRunner

        return TFLiteRunner
    if kind == "onnx":
        from edgekit.runtime.onnx import OnnxRunner

        return OnnxRunner
    from edgekit.runtime.openvino import OpenVINORunner

    return OpenVINORunner


def sniff_format(path: Path) -> str | None:
    """What the bytes say the file is: TFLite flatbuffers carry "TFL3" at offset 4, OpenVINO
    IR is XML, an ONNX ModelProto starts with its ir_version field (tag 0x08)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.lstrip().startswith(b"<"):
        return "openvino"
    if head[:1] == b"\x08":
        return "onnx"
    return None


def artifact_format(path: Path) -> str:
    """The runtime an artifact needs, from its extension, checked against its content."""
    path = Path(path)
    kind = RUNNER_FOR_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown artifact type; expected one of {', '.join(RUNNER_FOR_SUFFIX)}")
    regular_file(path, "artifact")
    content = sniff_format(path)
    if content is not None and content != kind:
        right = {v: k for k, v in RUNNER_FOR_SUFFIX.items()}[content]
        article = "an" if content == "onnx" else "a"
        raise InputError(f"{path}: the extension says {kind} but the content is {article} {content} model; "
                         f"rename it to {path.stem}{right}")
    return kind


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
    `providers` (ONNX Runtime) and `openvino_device` come from a device profile."""
    path = Path(path)
    kind = artifact_format(path)
    threads = threads or default_threads()
    if kind == "openvino":
        regular_file(path.with_suffix(".bin"), f"{path} needs its weights beside it:", InputError)
    options = {"onnx": {"providers": providers}, "openvino": {"device": openvino_device}}.get(kind, {})
    return load_checked(path, kind, lambda: _runner_class(kind)(path, threads, **{k: v for k, v in options.items() if v}))


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
