"""The layering of docs/architecture.md, checked over the real import graph (imports inside functions included).

Layers, bottom to top; a module may import its own layer and those below it, never one above:

    base        errors, _version, paths, models
    runtime     runtime/ (ONNX Runtime, model metadata, the text a model sees, vector spaces)
    specs       specs.py (typed specs, parsed once at the edges)
    library     data/, evaluate/, generate/, train/, export/, opensearch/ (not its CLI)
    components  haystack_integrations/components/*/syntriever
    serving     serve/ (pipeline factories, the saved store)
    flow        flow/ (steps of `syntriever run`)
    cli         cli.py, __main__.py, */cli.py and their argument helpers
    package     syntriever_haystack/__init__.py (lazy re-exports only)

Also: no import cycle between modules or between packages, the four component families do not import each other,
and no module is over the size limit.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("syntriever_haystack", "haystack_integrations")
MAX_LINES = 600

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "syntriever_haystack._version",
            "syntriever_haystack.errors",
            "syntriever_haystack.paths",
            "syntriever_haystack.models",
        ),
    ),
    ("runtime", ("syntriever_haystack.runtime",)),
    ("specs", ("syntriever_haystack.specs",)),
    (
        "library",
        (
            "syntriever_haystack.data",
            "syntriever_haystack.evaluate",
            "syntriever_haystack.generate",
            "syntriever_haystack.train",
            "syntriever_haystack.export",
            "syntriever_haystack.opensearch",
        ),
    ),
    ("components", ("haystack_integrations",)),
    ("serving", ("syntriever_haystack.serve",)),
    ("flow", ("syntriever_haystack.flow",)),
    (
        "cli",
        (
            "syntriever_haystack.cli",
            "syntriever_haystack.cli_types",
            "syntriever_haystack.__main__",
            "syntriever_haystack.opensearch.cli_args",
            "syntriever_haystack.opensearch.ml_cli",
        ),
    ),
    ("package", ("syntriever_haystack",)),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if _is_ours(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if not _is_ours(source):
                continue
            targets.add(source)
            targets.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules)
    resolved = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def layer_of(module: str) -> str:
    """The layer of ``module``: the most specific prefix listed in LAYERS; any ``*.cli`` module is the CLI."""
    if module.endswith(".cli"):
        return "cli"
    best, best_len = None, -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_layers_point_one_way(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{source} ({layer_of(source)}) imports {target} ({layer_of(target)})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if RANK[layer_of(target)] > RANK[layer_of(source)]
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_library_never_imports_the_components(graph: dict[str, set[str]]) -> None:
    library = [m for m in graph if layer_of(m) in ("base", "runtime", "specs", "library")]
    assert {"syntriever_haystack.generate.judges", "syntriever_haystack.evaluate.systems"} <= set(library)
    offenders = [f"{m} -> {t}" for m in library for t in graph[m] if t.startswith("haystack_integrations")]
    assert not offenders


def test_component_families_are_independent(graph: dict[str, set[str]]) -> None:
    def family(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if module.startswith("haystack_integrations.components.") and len(parts) > 2 else None

    crossing = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if family(m) and family(t) and family(m) != family(t)
    ]
    assert not crossing


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # a package's __init__ re-exporting its own modules is not a cycle of the design: leave those edges out
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert not _cycles(edges), "module import cycles"


def test_no_package_cycles(graph: dict[str, set[str]]) -> None:
    def package(module: str) -> str:
        depth = 2 if module.startswith("syntriever_haystack") else 3
        return ".".join(module.split(".")[:depth])

    edges: dict[str, set[str]] = defaultdict(set)
    for m, targets in graph.items():
        if m == "syntriever_haystack":  # the lazy re-export façade sits above everything
            continue
        for t in targets:
            if package(m) != package(t) and t != "syntriever_haystack":
                edges[package(m)].add(package(t))
    assert not _cycles(edges), "package import cycles"


def test_modules_stay_readable() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
