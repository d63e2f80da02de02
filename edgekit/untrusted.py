"""YAML and JSON from users' files (recipes, gate configs, device profiles, reports).

One reader for all of them, so every such file gets the same limits: a regular file, at most
16 MiB, UTF-8, nesting within Python's recursion limit and integers within its 4300 digits.
Anything else is one line naming the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InputError, first_line, regular_file

MAX_TEXT_BYTES = 16 << 20  # recipes, profiles and reports are kilobytes


def read_text(path: Path, what: str, error: type[InputError] = InputError) -> str:
    path = regular_file(path, what, error)
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise error(f"{what} {path} is over {MAX_TEXT_BYTES >> 20} MiB; refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (bad byte at offset {exc.start})") from None


def load_yaml(path: Path, what: str, error: type[InputError] = InputError):
    """Plain data only (safe_load: no tags that build Python objects)."""
    import yaml

    text = read_text(path, what, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML ({first_line(exc)})") from None
    except (RecursionError, ValueError) as exc:
        raise error(f"{what} {path} cannot be read ({_why(exc)})") from None


def load_json(path: Path, what: str, error: type[InputError] = InputError, parse=None):
    """JSON through `parse` (default json.loads); any ValueError it raises is a bad file."""
    import json

    text = read_text(path, what, error)
    try:
        return (parse or json.loads)(text)
    except (RecursionError, ValueError) as exc:
        raise error(f"{what} {path} is not JSON ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it nests too deeply"
    return first_line(exc, limit=120)
