"""Whether an artifact is right and how good it is: verification against the original, accuracy
evaluation, per-layer diagnosis, the accuracy-aware search, the tolerance rule, and facts read
from the files.

See docs/architecture.md."""
