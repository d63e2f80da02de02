"""Prune 30% of every prunable channel group of one keras.applications model (tests/zoo_build.py)
and check the rebuild. Run as `python -m tests.channels_zoo FLAVOUR NAME SIZE FOLDER` (a child
process, so the test process does not keep every model of the zoo); prints one JSON line.

The model is loaded the way `compress` loads it (Keras 3 through the tf_keras bridge). The rebuilt
model must compute what the original computes with the removed channels' reads zeroed
(edgekit/compression/stages/channels.py check_rebuild, on the zoo's own inputs), and where no
channel was removed at all it must compute what the original did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def run(flavour: str, name: str, size: int, folder: Path) -> dict:
    from tests.zoo_build import build

    path = build(flavour, name, size, folder)
    from edgekit.compression.channels.graph import channel_graph
    from edgekit.compression.channels.rebuild import rebuild
    from edgekit.compression.channels.select import plan
    from edgekit.compression.stages.channels import check_rebuild
    from edgekit.intake.model import count_macs, load_model

    loaded = load_model(path)
    if loaded.keras_model is None:
        return {"prunable": 0, "why": loaded.notes[0] if loaded.notes else "no tf_keras model"}
    model = loaded.keras_model
    x = np.load(folder / "data.npz")["x"][:8]
    graph = channel_graph(model)
    groups = graph.prunable()
    keep = plan(graph, {g.id: 0.3 for g in groups}, "bn", 8)
    smaller = rebuild(graph, keep)
    delta = check_rebuild(graph, keep, smaller, x)
    untouched = float(np.max(np.abs(np.asarray(rebuild(graph, {})(x, training=False))
                                    - np.asarray(model(x, training=False)))))
    return {"prunable": len(groups), "pruned": len(keep), "left_alone": graph.left_alone(),
            "macs": [count_macs(model), count_macs(smaller)], "delta": delta, "untouched_delta": untouched,
            "scale": float(np.max(np.abs(np.asarray(model(x, training=False)))))}


if __name__ == "__main__":
    flavour, name, size, folder = sys.argv[1:5]
    print(json.dumps(run(flavour, name, int(size), Path(folder))))
