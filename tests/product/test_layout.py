"""The package layout of docs/architecture.md, checked from the source: few root modules, every
package importing only the packages before it, no import cycle at import time, and no file
pointing readers to a document the repository does not hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "edgekit"
# The import order of docs/architecture.md: each may import those before it, never after.
LAYERS = ["errors", "support", "intake", "formats", "quality", "measure", "reports", "compression", "sweeps"]
ROOT_MODULES = {"__init__", "__main__", "api", "cli", "demo", "errors", "latency"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The edgekit modules a file imports (inside functions too, unless top_level_only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgekit":
            found.update([node.module] if node.module != "edgekit" else [f"edgekit.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "edgekit")
    return found


def _unit(module: str) -> str:
    """The layer a module belongs to: its package, or "root:NAME" for a root module."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root:__init__"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else ("errors" if parts[1] == "errors" else f"root:{parts[1]}")


def test_the_package_root_holds_few_modules():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == ROOT_MODULES and len(modules) <= 8


def test_every_package_is_a_known_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {"errors"}


def test_packages_import_only_the_layers_before_them():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        source = _unit(_module_name(path))
        if source.startswith("root:"):
            continue  # api, cli, demo and the rest sit above everything
        for target in _imports(path):
            unit = _unit(target)
            if unit.startswith("root:") or LAYERS.index(unit) > LAYERS.index(source):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_no_import_cycle_at_import_time():
    graph = {_module_name(p): {t for t in _imports(p, top_level_only=True)} for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError(" → ".join([*path, module, target]))
            if target in graph and state.get(target) is None:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_importing_edgekit_and_its_cli_loads_no_tensorflow():
    code = "import sys, edgekit, edgekit.cli; print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras', " \
           "'onnxruntime', 'openvino', 'tf2onnx') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_no_file_cites_a_document_outside_the_repository():
    missing = "DESIGN" + ".md"  # spelled apart so this file does not cite it either
    skipped = {".git", ".venv", "__pycache__", "node_modules", ".pytest_cache"}
    files = [p for p in ROOT.rglob("*") if p.is_file() and not skipped & set(p.relative_to(ROOT).parts)
             and p.suffix in (".py", ".md", ".toml", ".yaml", ".cfg", "")]
    citing = [str(p.relative_to(ROOT)) for p in files if missing in p.read_text(errors="replace")]
    assert citing == []
    assert (ROOT / "docs" / "architecture.md").is_file()


def test_no_code_outside_formats_branches_on_a_format_name():
    """Format-agnostic code asks the registry (edgekit/formats/__init__.py): a comparison with a
    format's name, or a table keyed by it, belongs in that format's package."""
    from edgekit.formats import FORMATS

    found = []
    for path in PACKAGE.rglob("*.py"):
        if "formats" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Compare):
                names = [n for n in [node.left, *node.comparators] for n in ([n] if not isinstance(n, (ast.Tuple, ast.List, ast.Set)) else n.elts)]
            elif isinstance(node, ast.Dict):
                names = [k for k in node.keys if k is not None]
            if any(isinstance(n, ast.Constant) and n.value in FORMATS for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_tests_mirror_the_packages():
    """tests/<package>/ for each package; tests/product/ for what crosses them (CLI contracts, API,
    docs' commands); tests/trained/ for the trained-architecture tier."""
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == packages | {"product", "trained"}
    assert all(any((ROOT / "tests" / name).glob("test_*.py")) for name in folders)
