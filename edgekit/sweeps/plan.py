"""What a sweep will run: recipes × grid values → cells, each keyed by what decides its result.

A cell is one `compress`. Its key is a hash of everything that can change its files and
numbers (the model's bytes, the resolved recipe, the data's bytes, the seed, edgekit's and
the converters' versions), so a rerun finds a finished cell by its key and does not run it
again, and a change to any input makes a new cell rather than reusing a stale one.
"""

from __future__ import annotations

import hashlib
import math
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.compression.config import Recipe, load_recipe, validate_recipe
from edgekit.errors import InputError

DEFAULT_RECIPES = "int8,prune50-int8,qat-int8,fp16"

# --grid KEY: what it sets in a recipe, and which recipes it applies to (the others are not multiplied).
GRID_KEYS = {
    "sparsity": "the prune stage's sparsity (recipes that prune)",
    "calib_samples": "calibration samples (int8 recipes)",
    "epochs": "fine-tuning epochs (recipes that prune or run QAT)",
}


@dataclass(frozen=True)
class RecipeChoice:
    """One --recipes item: the recipe, or why it could not be read (the sweep records it as a failed cell)."""

    label: str
    recipe: Recipe | None
    error: str | None = None


@dataclass
class Cell:
    name: str  # e.g. "prune50-int8 sparsity=0.3"
    folder: str  # its folder in the store: name and key, filesystem-safe
    key: str
    recipe: Recipe | None
    grid: dict = field(default_factory=dict)
    error: str | None = None  # set when the cell cannot run at all (a recipe file that does not validate)

    def describe(self) -> dict:
        return {"name": self.name, "folder": self.folder, "key": self.key, "grid": self.grid,
                "recipe": self.recipe.model_dump(mode="json") if self.recipe else None}


def parse_recipes(text: str) -> list[RecipeChoice]:
    """`int8,prune50-int8,my.yaml`: shipped names or YAML files. A name or path that does not
    exist is a typo (exit 2); a file that exists but is not a valid recipe is a failed cell."""
    from edgekit.compression.config import shipped_recipes

    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InputError(f"--recipes {text!r}: name at least one recipe, e.g. --recipes int8,fp16")
    shipped = shipped_recipes()
    choices = []
    for item in dict.fromkeys(items):
        if item not in shipped and not Path(item).is_file():
            raise InputError(f"--recipes {item}: no such file or shipped recipe (shipped: {', '.join(shipped)})")
        label = item if item in shipped else Path(item).stem
        try:
            choices.append(RecipeChoice(label, load_recipe(item)))
        except InputError as exc:
            choices.append(RecipeChoice(label, None, str(exc)))
    return choices


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid sparsity=0.3,0.5 --grid calib_samples=100,500` (or both in one quoted value)."""
    grid: dict[str, list] = {}
    for item in (part for text in items for part in text.split()):
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise InputError(f"--grid {item}: write KEY=V1,V2,… e.g. --grid sparsity=0.3,0.5")
        if key not in GRID_KEYS:
            raise InputError(f"--grid {item}: unknown key {key!r}; choose from "
                             + "; ".join(f"{k} ({what})" for k, what in GRID_KEYS.items()))
        if key in grid:
            raise InputError(f"--grid {key} is given twice; list every value once: --grid {key}=V1,V2")
        grid[key] = [_grid_value(key, v.strip(), item) for v in values.split(",") if v.strip()]
        grid[key] = list(dict.fromkeys(grid[key]))
    return grid


def _grid_value(key: str, text: str, item: str):
    try:
        value = float(text) if key == "sparsity" else int(text)
    except ValueError:
        kind = "a number between 0 and 1" if key == "sparsity" else "a whole number"
        raise InputError(f"--grid {item}: {text!r} is not {kind}") from None
    limits = {"sparsity": (0, 1), "calib_samples": (1, 10_000_000), "epochs": (1, 10_000)}[key]
    low, high = limits
    ok = low < value < high if key == "sparsity" else low <= value <= high
    if not ok:
        bounds = "between 0 and 1 (exclusive)" if key == "sparsity" else f"from {low} to {high:,}"
        raise InputError(f"--grid {item}: {key} must be {bounds}, got {text}")
    return value


def _applies(key: str, recipe: Recipe) -> bool:
    if key == "sparsity":
        return recipe.prune is not None
    if key == "calib_samples":
        return recipe.int8
    return bool(recipe.stages)


def _with_values(recipe: Recipe, values: dict) -> Recipe:
    data = recipe.model_dump(mode="json")
    for stage in data["stages"]:
        if "sparsity" in values and stage["type"] == "prune":
            stage["sparsity"] = values["sparsity"]
        if "epochs" in values:
            stage["epochs"] = values["epochs"]
    if "calib_samples" in values:
        data["calib_samples"] = values["calib_samples"]
    return validate_recipe(data, recipe.name or "sweep")


def _overridden(recipe: Recipe, overrides: dict) -> Recipe:
    """--formats and --preprocess of the sweep apply to every recipe (a recipe's own formats are
    narrowed to those given; one that shares none keeps its own: an edgetpu recipe stays tflite)."""
    data = recipe.model_dump(mode="json")
    if overrides.get("formats"):
        kept = [f for f in data["formats"] if f in overrides["formats"]]
        data["formats"] = kept or data["formats"]
    if overrides.get("preprocess"):
        data["preprocess"] = overrides["preprocess"]
    return validate_recipe(data, recipe.name or "sweep")


def expand(choices: list[RecipeChoice], grid: dict[str, list], overrides: dict, inputs_key: str) -> list[Cell]:
    """Every recipe × every combination of the grid values that apply to it."""
    for key in grid:
        if not any(c.recipe and _applies(key, c.recipe) for c in choices):
            raise InputError(f"--grid {key}: none of the recipes has it ({GRID_KEYS[key]}); "
                             "add one that does, e.g. --recipes int8,prune50-int8")
    cells = []
    for choice in choices:
        if choice.recipe is None:
            cells.append(_cell(choice.label, None, {}, inputs_key, choice.error))
            continue
        keys = [k for k in grid if _applies(k, choice.recipe)]
        for combo in _combinations([grid[k] for k in keys]):
            values = dict(zip(keys, combo))
            recipe = _overridden(_with_values(choice.recipe, values), overrides)
            cells.append(_cell(choice.label, recipe, values, inputs_key))
    return _unique(cells)


def count_cells(choices: list[RecipeChoice], grid: dict[str, list]) -> int:
    """How many cells `expand` would make (before merging equal ones), without making them:
    a grid of 99 × 1000 × 10 values is refused in microseconds, not after 4 minutes and 3 GB."""
    return sum(math.prod(len(grid[k]) for k in grid if _applies(k, c.recipe)) if c.recipe else 1 for c in choices)


def _combinations(lists: list[list]) -> list[tuple]:
    combos: list[tuple] = [()]
    for values in lists:
        combos = [c + (v,) for c in combos for v in values]
    return combos


def _cell(label: str, recipe: Recipe | None, values: dict, inputs_key: str, error: str | None = None) -> Cell:
    name = " ".join([label, *(f"{k}={v:g}" for k, v in values.items())])
    resolved = recipe.model_dump(mode="json", exclude={"name", "description"}) if recipe else {"error": error}
    key = hashlib.sha256(json.dumps([inputs_key, resolved], sort_keys=True).encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name.replace(" ", "_"))[:80]
    return Cell(name=name, folder=f"{safe}-{key[:10]}", key=key, recipe=recipe, grid=values, error=error)


def _unique(cells: list[Cell]) -> list[Cell]:
    """Two recipes that resolve to the same pipeline (int8 listed twice under two names) are one cell."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        seen.setdefault(cell.key, cell)
    return list(seen.values())


def inputs_key(model: Path, data: Path | None, val: Path | None, seed: int, trust_model: bool) -> str:
    """The part of every cell's key that the recipe does not decide."""
    from edgekit.intake.model import sha256_of
    from edgekit.reports.report import environment

    env = environment()
    parts = {
        "model": sha256_of(model), "data": sha256_of(data) if data else None, "val": sha256_of(val) if val else None,
        "seed": seed, "trust_model": trust_model, "edgekit": _edgekit_version(), "python": env["python"],
        "versions": env["versions"],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _edgekit_version() -> str:
    from edgekit.support.version import __version__

    return __version__
