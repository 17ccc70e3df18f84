"""The import graph flows downward: recsys < datagen < workflows < training < serving <
pipeline; client and monitoring depend on recsys only (monitoring also on nothing above
it); nothing imports pipeline; no import cycles; serving never imports training."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("recsys", "datagen", "workflows", "monitoring", "training", "serving", "pipeline")
# What each package may import besides itself (tools are leaves: nobody imports them).
ALLOWED: dict[str, set[str]] = {
    "recsys": set(),
    "datagen": {"recsys"},
    "workflows": {"recsys", "datagen"},
    "monitoring": {"recsys"},
    "training": {"recsys", "datagen", "workflows", "monitoring"},
    "serving": {"recsys", "datagen", "workflows", "monitoring", "client"},
    "client": {"recsys"},
    "perf_analyzer": {"recsys", "datagen", "workflows", "monitoring", "training", "serving",
                      "client"},
    "pipeline": {"recsys", "datagen", "workflows", "monitoring", "training", "serving", "client"},
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> module path -> project packages it imports (other than itself)."""
    graph: dict[str, dict[str, set[str]]] = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules = {m.split(".")[0] for m in imports_of(path)}
            graph.setdefault(package, {})[str(path.relative_to(ROOT))] = (
                modules & set(ALLOWED)
            ) - {package}
    return graph


def test_every_package_imports_only_the_layers_below_it() -> None:
    problems = [
        f"{module} imports {sorted(used - ALLOWED[package])}"
        for package, modules in package_imports().items()
        for module, used in modules.items()
        if used - ALLOWED[package]
    ]
    assert not problems, "\n".join(problems)


def test_serving_never_imports_training() -> None:
    assert "training" not in ALLOWED["serving"]
    used = set().union(*package_imports()["serving"].values())
    assert "training" not in used


def test_the_allowed_graph_has_no_cycles() -> None:
    # A topological order exists: repeatedly remove packages whose allowed imports are gone.
    remaining = {package: set(deps) for package, deps in ALLOWED.items()}
    while remaining:
        free = [p for p, deps in remaining.items() if not deps & set(remaining)]
        assert free, f"cycle among {sorted(remaining)}"
        for package in free:
            del remaining[package]


def test_no_module_imports_a_module_that_imports_it() -> None:
    """Module-level cycles inside a package (e.g. repository <-> versions before)."""
    edges: dict[str, set[str]] = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            edges[name.removesuffix(".__init__")] = {
                m for m in imports_of(path) if m.split(".")[0] == package
            }
    cycles = sorted(f"{a} <-> {b}" for a, deps in edges.items() for b in deps
                    if a in edges.get(b, set()) and a < b)  # fmt: skip
    assert not cycles, cycles
