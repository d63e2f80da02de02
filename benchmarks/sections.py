"""results.md is written by several scripts: vs_handwritten.py owns the top, and each of the
others owns one section between `<!-- NAME: begin -->` and `<!-- NAME: end -->` markers, which
every script keeps when it rewrites the file."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- (?P<name>[\w.]+): begin -->.*?<!-- (?P=name): end -->", re.S)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def write_section(name: str, section: str, path: Path) -> None:
    """Replace NAME's section of path (or append it); `section` holds its own markers."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def kept_sections(path: Path) -> str:
    """Every marked section of path, to be carried over when the file is rewritten."""
    text = path.read_text() if path.exists() else ""
    return "".join(f"\n{m.group(0)}\n" for m in _SECTION.finditer(text))
