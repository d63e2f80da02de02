"""Everything edgekit knows about ONNX (tf2onnx, ONNX Runtime) files: the parts edgekit.formats.PARTS lists."""
