"""The source tree's shape: no import circles, small modules, one home for shared names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("fedpeft", "server_app", "client_app", "peft_strategies")
# Baseline: the longest modules when this test was written are server_app/strategy.py
# (279 lines, 349 before the round loop moved out) and fedpeft/tools/procs.py (253); past
# ~300 lines a module holds two concerns.
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """First-party modules ``module`` imports, at module or function level.

    Importing ``a.b.c`` also runs ``a`` and ``a.b``; those count too, except the
    packages ``module`` itself lives in. ``if TYPE_CHECKING:`` imports count: a type a
    module names is a dependency, whether or not it is imported at run time.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    edges = set()
    for name in found:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in known and target not in own and target != module:
                edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_in_the_source_tree():
    # Prepare
    modules = _modules()
    known = set(modules)
    # Execute
    graph = {m: _imports(m, p, known) for m, p in modules.items()}
    # Assert
    assert "fedpeft.tools.report" in graph["fedpeft.tools.sweep"]  # function-level imports
    assert "server_app.rounds" in graph["server_app.checkpoint"]  # TYPE_CHECKING imports
    assert _cycles(graph) == []


def test_no_module_is_over_300_lines():
    long = {
        m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_shared_names_are_defined_once():
    # Prepare
    pattern = re.compile(r"^(Arrays|ConfigError|RULES|SOURCES|PARTITIONERS)\b.*=", re.M)
    # Execute
    found: dict[str, list[str]] = {}
    for module, path in _modules().items():
        for match in pattern.finditer(path.read_text()):
            found.setdefault(match.group(1), []).append(module)
    # Assert
    assert {k: len(v) for k, v in found.items()} == {
        "Arrays": 1, "RULES": 1, "SOURCES": 1, "PARTITIONERS": 1,
    }, found  # fmt: skip


def test_only_the_config_package_parses_or_merges_run_config_keys():
    # Prepare: the functions that read raw flat keys or --run-config strings
    readers = re.compile(r"\b(flatten_dict|parse_config_args|get_project_config)\(")
    # Execute
    outside = [m for m, p in _modules().items()
               if readers.search(p.read_text()) and not m.startswith("fedpeft.config")]  # fmt: skip
    # Assert
    assert outside == []


# The launchers, sweeps, reports, deployment, export and inference live in fedpeft.tools:
# tools around the library, which the library (the rest of fedpeft/) and the apps never import.
TOOLS = ("fedpeft.tools",)
APPS = ("server_app", "client_app")


def _is(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(f"{r}.") for r in roots)


def test_the_core_imports_no_tool_and_no_app_and_the_apps_no_tool():
    # Prepare
    modules = _modules()
    known = set(modules)
    core = [m for m in modules if m.startswith("fedpeft") and not _is(m, TOOLS)]
    apps = [m for m in modules if _is(m, (*APPS, "peft_strategies"))]
    # Execute
    upward = {m: sorted(t for t in _imports(m, modules[m], known) if _is(t, (*TOOLS, *APPS)))
              for m in core}  # fmt: skip
    app_tools = {m: sorted(t for t in _imports(m, modules[m], known) if _is(t, TOOLS))
                 for m in apps}  # fmt: skip
    # Assert: the check sees the tools' own arrows (baseline: the sweep imports the report)
    sweep = "fedpeft.tools.sweep"
    assert "fedpeft.tools.report" in _imports(sweep, modules[sweep], known)
    assert {m: t for m, t in upward.items() if t} == {}
    assert {m: t for m, t in app_tools.items() if t} == {}
