"""edgekit: compress Keras image classifiers and take them to edge devices.

Importing this package must stay cheap: TensorFlow, tf2onnx, OpenVINO and NNCF are
imported lazily inside the functions that need them (see DESIGN.md, "Light on the device").
"""

__version__ = "0.1.0"
