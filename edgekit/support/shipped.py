"""The YAML files edgekit ships (recipes/, devices/) and where an install keeps them."""

from __future__ import annotations

import sys
from pathlib import Path


def shipped_dirs(kind: str) -> list[Path]:
    """Where shipped YAML (`recipes`, `devices`) lives: beside the package (a checkout or
    editable install), or in <prefix>/share/edgekit/<kind> (a wheel install)."""
    return [Path(__file__).resolve().parents[2] / kind, Path(sys.prefix) / "share" / "edgekit" / kind]


def shipped_files(kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in shipped_dirs(kind):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found
