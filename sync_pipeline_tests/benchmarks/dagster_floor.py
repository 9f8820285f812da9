"""Dagster's own floor: what `dg launch --assets users` costs when the asset does nothing at all.

Any code location launched with `dg launch` pays for dg's command line, `import dagster`, the
instance's storage and a run's events before its first asset does any work. To tell that cost from
the product's own start-up, `write_project` makes the smallest dg project there is (one asset named
`users` whose body is `pass`, the same in-process executor as the product's), and the benchmarks
launch it with the same venv and the same dagster.yaml as the product. A whole-command target
below that floor cannot be met by any code location, so the benchmarks print it beside their
targets.
"""

from __future__ import annotations

from pathlib import Path

PROJECT = "dagster_floor"
ASSET = "users"

_PYPROJECT = f"""\
[project]
name = "{PROJECT}"
version = "0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{PROJECT}"
code_location_target_module = "{PROJECT}.definitions"
"""

_DEFINITIONS = f'''\
"""One asset that does nothing: Dagster's floor for `dg launch --assets {ASSET}`."""

import dagster as dg


@dg.asset
def {ASSET}() -> None:
    """Nothing to do."""


defs = dg.Definitions(assets=[{ASSET}], executor=dg.in_process_executor)
'''


def write_project(folder: Path) -> Path:
    """Write the project into `folder` (created) and return it; run `command()` there, with `folder` on
    PYTHONPATH (see `environment`) and the product's venv active."""
    package = folder / PROJECT
    (package / "defs").mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(_PYPROJECT, encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "defs" / "__init__.py").write_text("", encoding="utf-8")
    (package / "definitions.py").write_text(_DEFINITIONS, encoding="utf-8")
    return folder


def command(dg_program: str) -> list[str]:
    """The floor's command: the product's own, on the empty project."""
    return [dg_program, "launch", "--assets", ASSET]


def environment(base: dict[str, str], folder: Path, dagster_home: Path) -> dict[str, str]:
    """`base` (a shell with the product's venv active) importing the project from `folder`, recording its
    runs in `dagster_home` (its own: the product's runs are read back from the product's)."""
    return {**base, "PYTHONPATH": str(folder), "DAGSTER_HOME": str(dagster_home)}
