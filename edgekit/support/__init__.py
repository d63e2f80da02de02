"""Plumbing every package uses: child-process steps, memory budgets, staged all-or-nothing
outputs, progress lines, silencing library output, reading untrusted YAML/JSON, and the
Keras/TensorFlow import rules.

See docs/architecture.md."""
