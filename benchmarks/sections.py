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


def run_per_model(doc: str, script: str, title: str, default_models: str, section) -> None:
    """The main of a script that writes one part per model (`section(name, folder)` → lines, each
    in a temporary folder of its own) into its section of results.md: --models and --out."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models", default=default_models)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.md")
    args = parser.parse_args()
    lines = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            lines += section(name, Path(tmp))
    begin, end = markers(script)
    text = "\n".join([begin, f"## {title} (benchmarks/{script})", "", *lines, end])
    write_section(script, text, args.out)
    print(text)


def kept_sections(path: Path) -> str:
    """Every marked section of path, to be carried over when the file is rewritten."""
    text = path.read_text() if path.exists() else ""
    return "".join(f"\n{m.group(0)}\n" for m in _SECTION.finditer(text))
