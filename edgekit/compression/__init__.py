"""The compress flow: recipes and their CLI flags, the training stages (pruning, QAT) and the
pipeline that runs them and the exporters.

See docs/architecture.md."""
