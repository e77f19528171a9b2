"""The layout holds: small modules and functions, MLflow and Evidently behind their one
package each, dependencies pointing down the layers, tests that use public names only.

Read from the source with `ast`, so nothing is imported. Where a rule does not hold yet
because a change in flight fixes it, the file is named in an allow-list below with why;
the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mm_platform"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# high to low: a package imports only from its own rank or below
LAYERS = [
    "errors",
    "clock",
    "faults",
    "progress",
    "project",
    "data",
    "spark",
    "modeling",
    "tracking",
    "serving",
    "compression",
    "training",
    "lifecycle",
    "monitoring",
    "cli",
]
# modules that import MLflow outside tracking/, and why
MLFLOW_ALLOWED = {
    "mm_platform/serving/app.py": "runs inside MLflow's scoring server",
    "mm_platform/serving/monitored.py": "the pyfunc MLflow's scoring server loads",
    "mm_platform/serving/launcher.py": "starts MLflow's scoring server",
    "mm_platform/compression/mm_compressed.py": "the pyfunc loader of compressed models",
}

# --- not yet: each entry is being fixed by a change in flight (the lead empties these) ---
LONG_MODULES: set[str] = set()
LONG_FUNCTIONS: set[str] = set()
MLFLOW_NOT_YET: set[str] = set()
UPWARD_NOT_YET: set[tuple[str, str]] = set()
PRIVATE_IMPORTS_NOT_YET: set[tuple[str, str]] = set()


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names) of every absolute import, at any depth (function bodies too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [alias.name for alias in node.names]


def _layer(path: Path) -> str:
    """The layer of a module of mm_platform: its package, or its own name at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "cli" if parts == ("__main__",) else parts[0]


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        _rel(p) for p in _modules(PACKAGE) if len(p.read_text().splitlines()) > MAX_MODULE_LINES
    }
    assert long <= LONG_MODULES, f"over {MAX_MODULE_LINES} lines: {sorted(long - LONG_MODULES)}"


def test_no_function_is_longer_than_the_limit() -> None:
    long = set()
    for path in _modules(PACKAGE):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.add(f"{_rel(path)}:{node.name}")
    assert long <= LONG_FUNCTIONS, (
        f"over {MAX_FUNCTION_LINES} lines: {sorted(long - LONG_FUNCTIONS)}"
    )


@pytest.mark.parametrize(
    ("library", "home"),
    [("mlflow", "mm_platform/tracking/"), ("evidently", "mm_platform/monitoring/")],
)
def test_a_heavy_library_is_imported_only_by_its_package(library: str, home: str) -> None:
    allowed = set(MLFLOW_ALLOWED) | MLFLOW_NOT_YET if library == "mlflow" else set()
    offenders = set()
    for path in _modules(PACKAGE):
        where = _rel(path)
        if where.startswith(home) or where in allowed:
            continue
        if any(m.split(".")[0] == library for m, _ in _imported(_tree(path))):
            offenders.add(where)
    assert not offenders, f"{library} imported outside {home}: {sorted(offenders)}"


def test_dependencies_point_down_the_layers() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = set()
    for path in _modules(PACKAGE):
        if path == PACKAGE / "__init__.py":
            continue  # the package root re-exports the version and the error types
        own = _layer(path)
        for module, names in _imported(_tree(path)):
            parts = module.split(".")
            if parts[0] != "mm_platform":
                continue
            targets = [parts[1]] if len(parts) > 1 else names  # `from mm_platform import x`
            for target in targets:
                if target in rank and rank[target] > rank[own]:
                    upward.add((_rel(path), target))
    assert upward <= UPWARD_NOT_YET, f"imports of a higher layer: {sorted(upward - UPWARD_NOT_YET)}"


def test_every_layer_of_the_package_is_ranked() -> None:
    found = {_layer(p) for p in _modules(PACKAGE)} - {"__init__"}
    assert found <= set(LAYERS), f"not placed in LAYERS: {sorted(found - set(LAYERS))}"


def test_tests_import_helpers_from_a_module_not_conftest() -> None:
    offenders = sorted(
        _rel(path)
        for path in _modules(ROOT / "tests")
        if any(m.split(".")[0] == "conftest" for m, _ in _imported(_tree(path)))
    )
    assert not offenders, f"import from conftest (use tests/support): {offenders}"


def test_tests_import_only_public_names_of_the_package() -> None:
    private = set()
    for path in _modules(ROOT / "tests"):
        for module, names in _imported(_tree(path)):
            if module.split(".")[0] != "mm_platform":
                continue
            hidden = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
            hidden += [n for n in names if n.startswith("_") and not n.startswith("__")]
            private.update((_rel(path), name) for name in hidden)
    assert private <= PRIVATE_IMPORTS_NOT_YET, (
        f"private names imported: {sorted(private - PRIVATE_IMPORTS_NOT_YET)}"
    )
