"""Everything edgekit knows about OpenVINO IR (OpenVINO, NNCF) files: the parts edgekit.formats.PARTS lists."""
