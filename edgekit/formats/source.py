"""What a conversion step starts from, as a file a child process can open.

A step gets a `source` dict, never a Python object, so it can run in a child process:
- {"kind": "keras", "path": …}: a tf_keras-loadable .h5/.keras (the user's file when it
  is the working model unchanged, else the working model saved to the scratch folder);
- {"kind": "graph", "path": …}: a frozen GraphDef (.pb) with every call inlined.
Each converter starts from the one that costs it least (measured on VGG16: the TFLite
converter needs 4.8 GiB from the Keras model and 16.6 GiB from the frozen graph, while
tf2onnx and OpenVINO take a GraphDef). Objects already in this process are remembered by
path, so a step run in-process does not load the model a second time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import ModelError

_live: dict[str, Any] = {}  # path → the object already loaded in this process


def keras_source(path: Path, image_shape, custom_objects: str | None = None, trust: bool = False,
                 live=None, sha256: str | None = None) -> dict:
    """sha256: the digest of the file as it was vetted; a step refuses a file that changed since."""
    if live is not None:
        _live[str(path)] = live
    return {"kind": "keras", "path": str(path), "image_shape": list(image_shape),
            "custom_objects": custom_objects, "trust": trust, "sha256": sha256}


def graph_source(path: Path, image_shape, input_name: str, output_name: str, live=None) -> dict:
    if live is not None:
        _live[str(path)] = live
    return {"kind": "graph", "path": str(path), "image_shape": list(image_shape),
            "input_name": input_name, "output_name": output_name}


def forget_live(source: dict | None = None) -> None:
    """Drop the in-process objects (the run is over; let their memory go), or only `source`'s."""
    if source is None:
        _live.clear()
    else:
        _live.pop(source["path"], None)


def keras_model(source: dict):
    """The tf_keras model of a "keras" source (vetted by the parent before it got here)."""
    if source["path"] in _live:
        return _live[source["path"]]
    from edgekit.support.keras_compat import tf_keras
    from edgekit.intake.model import import_custom_objects

    from edgekit.intake.bridge import tf_keras_twins
    from edgekit.intake.model import sha256_of

    if source.get("sha256") and sha256_of(Path(source["path"])) != source["sha256"]:
        raise ModelError(f"{source['path']} changed while edgekit was converting it (it was checked before "
                         "loading, and is not the file that was checked); rerun on a file nothing else writes")
    keras = tf_keras()
    objects = tf_keras_twins()  # Keras' own classes a rebuilt Keras 3 model may hold
    if source.get("custom_objects"):
        objects.update(import_custom_objects(source["custom_objects"]))
    kwargs = {"safe_mode": not source.get("trust")} if source["path"].endswith(".keras") else {}
    return keras.models.load_model(source["path"], compile=False, custom_objects=objects, **kwargs)


def frozen_graph(source: dict):
    """The FrozenGraph of a source: read from its .pb, or traced and frozen from its Keras model."""
    from edgekit.formats.exporter import FrozenGraph, freeze

    if source["kind"] == "keras":
        model = keras_model(source)
        return freeze(lambda x: model(x, training=False), tuple(source["image_shape"]))
    if source["path"] in _live:
        return _live[source["path"]]
    from edgekit.support.keras_compat import tensorflow

    tf = tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(source["path"]).read_bytes())
    return FrozenGraph(graph_def, source["input_name"], source["output_name"])


def write_graph(frozen, path: Path, image_shape, live=None) -> dict:
    """Save a FrozenGraph as .pb; return its graph source."""
    Path(path).write_bytes(frozen.graph_def.SerializeToString())
    return graph_source(path, image_shape, frozen.input_name, frozen.output_name, live=live)


def freeze_step(source: dict, out: str) -> dict:
    """A step: freeze a Keras source into a .pb file; return the graph source (JSON)."""
    frozen = frozen_graph(source)
    return write_graph(frozen, Path(out), source["image_shape"], live=frozen)
