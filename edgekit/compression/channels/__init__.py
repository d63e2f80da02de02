"""Structured channel pruning: dependency groups (graph.py), a smaller model with the kept
channels (rebuild.py), which channels go (select.py). The stage that runs it, with the
distillation fine-tune, is edgekit/compression/stages/channels.py."""
