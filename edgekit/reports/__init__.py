"""What edgekit writes and judges: the report.json contract and its schema, report.md, the
terminal tables, report.html, and the gate.

See docs/architecture.md."""
