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
    """Plain data only (a safe loader: no tags that build Python objects), and no base-60
    numbers: YAML 1.1 reads an unquoted `structure: 2:4` as 124, YAML 1.2 and people read "2:4"."""
    import yaml

    text = read_text(path, what, error)
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML ({first_line(exc)})") from None
    except (RecursionError, ValueError) as exc:
        raise error(f"{what} {path} cannot be read ({_why(exc)})") from None


_INT = r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
_FLOAT = (r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
          r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")


def _loader():
    """yaml.SafeLoader with PyYAML's int and float rules minus their sexagesimal forms."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    numbers = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in rules if tag not in numbers]
                                      for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(f"^(?:{_INT})$"), list("-+0123456789"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(f"^(?:{_FLOAT})$"), list("-+0123456789."))

    def mapping_with_unique_keys(loader, node, deep=False):
        """A key twice in one mapping is an error: PyYAML keeps the last silently, so a gate
        config could read one max_accuracy_drop to a reviewer and another to the gate."""
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges keys that the mapping's own keys may override
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key is refused by PyYAML itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {str(key)[:80]!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.construct_mapping = mapping_with_unique_keys
    return Loader


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
