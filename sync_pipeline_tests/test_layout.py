"""The package's shape: the engine and the specs are plain Python, and no modules import each other in a circle."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import sync_pipeline

PACKAGE_ROOT = Path(sync_pipeline.__file__).parent
PLAIN_PACKAGES = ("sync_pipeline.engine", "sync_pipeline.specs", "sync_pipeline.connectors")
"""Packages a script or another orchestrator can import without Dagster."""


def _modules() -> dict[str, Path]:
    found = {"sync_pipeline": PACKAGE_ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE_ROOT)], "sync_pipeline."):
        relative = info.name.removeprefix("sync_pipeline.").replace(".", "/")
        package = PACKAGE_ROOT / relative / "__init__.py"
        found[info.name] = package if info.ispkg else PACKAGE_ROOT / f"{relative}.py"
    return found


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """The package's own modules `path` imports when it is loaded: top-level statements only, not
    imports inside functions or under TYPE_CHECKING, which never run at load time."""
    imported: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        imported |= {name for name in names if name in known}
    return imported


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that starts and ends at the same module, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_engine_and_the_specs_load_without_dagster() -> None:
    plain = sorted(name for name in _modules() if name.startswith(PLAIN_PACKAGES))
    assert "sync_pipeline.engine.entity_sync" in plain and "sync_pipeline.specs.tamhr" in plain
    script = (
        "import importlib, sys\n"
        f"for name in {plain!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"the engine loaded Dagster modules: {loaded[:300]}"


def test_no_module_of_the_package_imports_itself_back() -> None:
    modules = _modules()
    graph = {name: module_level_imports(path, set(modules)) - {name} for name, path in modules.items()}
    assert find_cycle(graph) is None


def test_the_parts_depend_one_way() -> None:
    """`orchestration` (the Dagster wiring) may use the engine, never the other way round; likewise for every
    pair of the package's parts (`engine`, `specs`, `orchestration`, `resources`, the top-level modules)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        part = _part(name)
        graph.setdefault(part, set()).update(_part(target) for target in module_level_imports(path, set(modules)))
        graph[part].discard(part)
    assert find_cycle(graph) is None
    assert "sync_pipeline.orchestration" not in graph["sync_pipeline.engine"]


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
