"""exporter/ has no import cycle: every module imports on its own, and the graph of its imports (those inside
functions too, which is where a cycle hides when dodged; `if TYPE_CHECKING:` blocks excepted) is acyclic."""

from __future__ import annotations

import ast
import graphlib
import importlib

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "exporter"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue  # runs the CLI when imported
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported(module: str, known: set[str]) -> set[str]:
    path = REPO.joinpath(*module.split("."))
    source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text(encoding="utf-8")
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(source))
    # A package's own __init__ runs before any of its modules: not an edge worth a cycle.
    return {name for name in found & known if name != module and not module.startswith(name + ".")}


def test_the_import_graph_has_no_cycle() -> None:
    known = set(module_names())
    graph = {module: imported(module, known) for module in known}
    assert graph["exporter.service"], "the scan finds no import at all"
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle (each imports the next): {' -> '.join(reversed(exc.args[1]))}")


@pytest.mark.parametrize("module", module_names())
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


# The rule generator renders YAML from the thresholds config; the runtime (metrics registry, state store, the
# HTTP service, ingest) must not leak into it, so that `billingwatch rules` and the dashboards generator stay
# plain functions of the config.
RUNTIME = {"exporter.metrics", "exporter.state", "exporter.service", "exporter.ingest", "exporter.web"}


def test_the_rule_generator_imports_no_runtime_module() -> None:
    known = set(module_names())
    graph = {module: imported(module, known) for module in known}
    for start in sorted(m for m in known if m.startswith("exporter.rulegen.")):
        reached, todo = set(), [start]
        while todo:
            for name in graph[todo.pop()] - reached:
                reached.add(name)
                todo.append(name)
        assert not reached & RUNTIME, f"{start} reaches runtime modules {sorted(reached & RUNTIME)}"
