"""The layers of DESIGN.md section 2, checked on the source: who may import whom, and no import cycle.

    eml_core  -> eml_core                 (no Prefect, no boto3)
    amt       -> amt, eml_core            (no Prefect)
    tasks     -> tasks, amt, eml_core
    flows     -> flows, tasks             (the command line, flows/cli, may also import eml_core.errors and
                                           eml_core.models for its argument parsing)

Every import counts, at module level or inside a function: a cycle through a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eml_core", "amt", "tasks", "flows")
ALLOWED = {"eml_core": {"eml_core"}, "amt": {"amt", "eml_core"}, "tasks": {"tasks", "amt", "eml_core"},
           "flows": {"flows", "tasks"}}
CLI_ARGUMENT_PARSING = {"eml_core.errors", "eml_core.models"}
FORBIDDEN_THIRD_PARTY = {"eml_core": {"prefect", "boto3", "botocore"}, "amt": {"prefect"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for imported in _imports(path):
            if imported in modules and imported != name:
                graph.add_edge(name, imported)
    return graph


def test_every_import_respects_the_layers():
    modules = _modules()
    problems = []
    for name, path in modules.items():
        layer = name.split(".")[0]
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top in FORBIDDEN_THIRD_PARTY.get(layer, ()):
                problems.append(f"{name} imports {imported}")
            if top in PACKAGES and top not in ALLOWED[layer]:
                module = imported if imported in modules else imported.rsplit(".", 1)[0]
                if name.startswith("flows.cli") and module in CLI_ARGUMENT_PARSING:
                    continue
                problems.append(f"{name} imports {imported}")
    assert not problems, "\n".join(problems)


def test_there_is_no_import_cycle():
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_a_layer_violation(tmp_path):
    """The two checks above can fail: a hand-made cycle is found, and so is a flows -> eml_core import."""
    graph = nx.DiGraph([("eml_core.a", "eml_core.b"), ("eml_core.b", "eml_core.a")])
    assert list(nx.simple_cycles(graph))
    module = tmp_path / "bad.py"
    module.write_text("from eml_core.decomposition import explain_pair\n\ndef f():\n    import prefect\n")
    assert {"eml_core.decomposition", "prefect"} <= _imports(module)


def test_no_public_name_of_eml_core_is_also_a_submodule_name():
    """A lazily exported name equal to a submodule's would be the module once that submodule is imported, and
    the function before: `from eml_core import NAME` must not depend on import order."""
    import eml_core

    submodules = {path.stem for path in (ROOT / "eml_core").glob("*.py")}
    assert set(eml_core._EXPORTS) & submodules == set()
    assert set(eml_core.__all__) == set(eml_core._EXPORTS)
