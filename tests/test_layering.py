"""The package's dependency rules (docs/architecture.md), checked on the source so they hold.

* only ``swarm/`` imports hivemind and only ``chain/`` imports bittensor, so either library can
  be upgraded or replaced behind one package;
* the ground floor (``data/``, ``model/``, ``config``, ``image_tokens``) imports nothing above
  it: the probe contract, the neurons and the swarm build on it, never the other way round.

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hivetrain"
GROUND_FLOOR = ("data", "model", "config.py", "image_tokens.py", "atomic.py", "errors.py")
ABOVE_GROUND = ("probe", "miner", "validator", "swarm", "localnet", "membership", "recipe",
                "cli", "export", "status", "swarm_run", "telemetry")


def runtime_imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs (not under ``if TYPE_CHECKING:``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def modules(*parts: str) -> list[Path]:
    paths = []
    for part in parts:
        target = PACKAGE / part
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return paths


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("library, home", [("hivemind", "swarm"), ("bittensor", "chain")])
def test_each_library_is_imported_by_its_own_package_only(library, home):
    offenders = [str(path.relative_to(PACKAGE)) for path in modules(".")
                 if path.relative_to(PACKAGE).parts[0] != home
                 and library in {top(name) for name in runtime_imports(path)}]
    assert not offenders, f"{library} is imported outside hivetrain/{home}/: {offenders}"


def test_the_ground_floor_imports_nothing_above_it():
    offenders = {}
    for path in modules(*GROUND_FLOOR):
        upward = sorted(name for name in runtime_imports(path)
                        if name.startswith("hivetrain.") and name.split(".")[1] in ABOVE_GROUND)
        if upward:
            offenders[str(path.relative_to(PACKAGE))] = upward
    assert not offenders, f"ground-floor modules import upward: {offenders}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The control: a module importing upward is found, one under TYPE_CHECKING is not."""
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nimport hivemind\n"
                      "from hivetrain.probe.schemas import ProbeRequest\n"
                      "if TYPE_CHECKING:\n    import bittensor\n")
    assert {"hivemind", "hivetrain.probe.schemas"} <= runtime_imports(module)
    assert "bittensor" not in runtime_imports(module)
