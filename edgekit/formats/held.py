"""Whether a written file holds the int8 weights edgekit chose (repairs.adaround).

Each format stores a kernel in its own layout (TFLite OHWI, ONNX and OpenVINO OIHW, a depthwise
kernel with its channels first or last, a dense kernel transposed or not), so a chosen Keras
kernel is looked for among the file's int8 arrays of the same size under every order of its
axes (axes of length 1 left out). A layer is held when one of them is equal to it, value for value.
"""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import numpy as np


def layers_not_held(chosen: dict[str, np.ndarray], path: Path, format_name: str) -> list[str]:
    """The layers whose chosen int8 kernel the file does not hold, in `chosen`'s order."""
    from edgekit.formats import get_format

    stored: dict[int, list[np.ndarray]] = {}
    for array in get_format(format_name).part("int8_weights")(path):
        squeezed = np.squeeze(array)
        stored.setdefault(squeezed.size, []).append(squeezed)
    return [name for name, kernel in chosen.items() if not _held(np.squeeze(kernel), stored.get(kernel.size, []))]


def _held(kernel: np.ndarray, candidates: list[np.ndarray]) -> bool:
    for candidate in candidates:
        if candidate.ndim != kernel.ndim:
            continue
        for order in permutations(range(kernel.ndim)):
            view = kernel.transpose(order)
            if view.shape == candidate.shape and np.array_equal(view, candidate):
                return True
    return False
