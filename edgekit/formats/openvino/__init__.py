"""Everything edgekit knows about OpenVINO IR (OpenVINO, NNCF) files; the registry (edgekit.formats) lists the parts."""

PARTS = {
    "exporter": "export:OpenVINOExporter",
    "runner": "runner:OpenVINORunner",
    "sniff": "runner:looks_like",
    "facts": "facts:read_facts",
    "graph": "chains:load_graph",
    "chains": "chains:file_chains",
    "taps": "taps:Taps",
    "search": "search:search",
    "search_inputs": "search:search_inputs",
    "search_method": "search:METHOD",
    "search_step": "search:STEP_KIND",
}
