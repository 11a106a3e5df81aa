"""The shape of the code itself: agent_hf's modules import each other without circles."""

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SOURCE_ROOT = REPO_ROOT / "src"
PACKAGE = "agent_hf"


def module_name(path: Path) -> str:
    """`src/agent_hf/hub/cards.py` -> `agent_hf.hub.cards`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(SOURCE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(name: str, is_package: bool, source: str, modules: set[str]) -> set[str]:
    """The modules of `modules` that module `name` imports anywhere in its `source`: at module level, inside
    functions, under `if TYPE_CHECKING:`, relative (`from .x import Y`, `from . import x`) or absolute."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module
            # `from package import submodule` imports the submodule; `from module import name`, the module.
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import agent_hf.a.b` runs agent_hf.a.b: the longest known
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports."""
    paths = sorted((SOURCE_ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {
        module_name(path): imported_modules(module_name(path), path.name == "__init__.py", path.read_text(), modules)
        for path in paths
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as `[a, b, ..., a]`, or None (depth-first search, in sorted order)."""
    state: dict[str, str] = {}  # "open" while on the search path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


SOURCE_WITH_EVERY_KIND_OF_IMPORT = """
from typing import TYPE_CHECKING

import agent_hf.hub.cards
from . import sibling
from ..models.heads import AgentFCNHead
from .other import name

if TYPE_CHECKING:
    from .typed import Thing


def function():
    from agent_hf.late import value
"""


def test_the_import_graph_sees_every_kind_of_import():
    """Positive control: each kind of import the cycle check relies on is an edge of the graph."""
    modules = {
        "agent_hf.hub.cards",
        "agent_hf.pkg.sibling",
        "agent_hf.models.heads",
        "agent_hf.pkg.other",
        "agent_hf.pkg.typed",
        "agent_hf.late",
        "agent_hf.pkg.module",
        "agent_hf.pkg",
    }
    found = imported_modules("agent_hf.pkg.module", False, SOURCE_WITH_EVERY_KIND_OF_IMPORT, modules)
    assert found == modules - {"agent_hf.pkg.module", "agent_hf.pkg"}
    assert imported_modules("agent_hf.pkg", True, "from .other import name", modules) == {"agent_hf.pkg.other"}
    graph = import_graph()
    assert "agent_hf.models.agent_attention" in graph["agent_hf.models.modeling_agent_swin"]
    assert "agent_hf.models.checkpoint_keys" in graph["agent_hf.official.checkpoints"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_both_configs_take_the_agent_attention_settings_from_one_place():
    """The agent attention settings of both config classes are documented, set and checked by the shared helpers of
    configuration_agent_common.py, with each family's own defaults (those of config.json files written before)."""
    from agent_hf import AgentPvtConfig, AgentSwinConfig

    expected = {
        AgentSwinConfig: [[9, 9], [12, 12], [14, 14], [7, 7]],
        AgentPvtConfig: [[12, 12], [16, 16], [28, 28], [28, 28]],
    }
    for config_class, grids in expected.items():
        config = config_class()
        assert (config.agent_num, config.downstream_agent_shapes) == ([9, 16, 49, 49], grids)
        assert (config.agent_kernel_size, config.attention_scale_exponent) == (3, -0.5)
        doc = config_class.__doc__
        assert "{agent_attention_args}" not in doc
        assert f"downstream_agent_shapes (`list[list[int]]`, *optional*, defaults to `{grids}`):" in doc
        assert "Agents per stage at pretraining (a square number: a sqrt x sqrt grid)." in doc
        with pytest.raises(ValueError, match=r"agent_num\[1\]=15 must be a square number"):
            config_class(agent_num=[9, 15, 49, 49])
