"""How fast an artifact runs: the latency harness (here or over SSH), device profiles and the
estimates for devices that are not attached.

See docs/architecture.md."""
