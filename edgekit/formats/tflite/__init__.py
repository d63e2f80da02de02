"""Everything edgekit knows about TFLite (LiteRT) files: the parts edgekit.formats.PARTS lists."""
