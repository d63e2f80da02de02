"""edgekit: compress Keras image classifiers and take them to edge devices.

Importing this package must stay cheap: TensorFlow, tf2onnx, OpenVINO and NNCF are
imported lazily inside the functions that need them (docs/architecture.md, "Light imports").
The Python API (edgekit.api) is imported on first use: `from edgekit import compress`.
"""

from edgekit.support.version import __version__

_API = ("compress", "evaluate", "bench", "calibrate", "gate", "sweep", "Report", "Evaluation", "Benchmark", "GateResult", "Sweep")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from edgekit import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
