"""The layout the architecture promises, checked on the source text (import-linter checks the
layers; these are the rules it cannot state): what the pure core and the driver contract may
import at all, that the core reads no clock and loads nothing dynamically, module sizes, and how
many plain modules sit at the top of ``replicator/``.

Every import counts: at the top, under ``TYPE_CHECKING`` and inside functions."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "replicator" / "core"
MAX_LINES = 500
"""Lines a product module may have (migrations aside): beyond it, split the module by concern."""
MAX_PLAIN_MODULES = 5
"""Plain modules directly in ``replicator/``: everything else lives in a layer's package."""


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(module == a or module.startswith(a + ".") for a in allowed)


CORE_MAY_IMPORT = ("pydantic", "pydantic_core", "platforms.contract", "replicator.core")
CORE_MAY_NOT_IMPORT_FROM_STDLIB = (
    "importlib",  # no dynamic imports: what the core runs is what it imports
    "logging",
    "time",  # no clock: now is passed in
    "asyncio",
    "socket",
    "subprocess",
    "threading",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "urllib",
    "http",
    "sqlite3",
    "random",
)


@pytest.mark.parametrize("path", _modules(CORE), ids=lambda p: p.name)
def test_the_core_imports_only_the_stdlib_pydantic_and_the_driver_contract(path: Path) -> None:
    wrong = [
        f"{path.name}:{line}: {module}"
        for line, module in _imports(path)
        if not _allowed(module, CORE_MAY_IMPORT) or module.split(".")[0] in CORE_MAY_NOT_IMPORT_FROM_STDLIB
    ]
    assert not wrong, f"the pure core imports {wrong}"


@pytest.mark.parametrize("path", _modules(CORE), ids=lambda p: p.name)
def test_the_core_reads_no_clock_and_no_environment(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "today", "environ", "getenv"):
            wrong.append(f"{path.name}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.Name) and node.id in ("open", "__import__", "exec", "eval", "input"):
            wrong.append(f"{path.name}:{node.lineno}: {node.id}")
    assert not wrong, f"the pure core reads the clock, the environment or files: {wrong}"


def test_the_driver_contract_imports_only_the_stdlib_and_pydantic() -> None:
    contract = ROOT / "platforms" / "contract.py"
    wrong = [
        f"contract.py:{line}: {module}"
        for line, module in _imports(contract)
        if not _allowed(module, ("pydantic", "platforms.contract", "platforms.options"))
    ]
    assert not wrong, wrong


def test_replicator_has_few_plain_modules() -> None:
    plain = sorted(p.name for p in (ROOT / "replicator").glob("*.py") if p.name != "__init__.py")
    assert len(plain) <= MAX_PLAIN_MODULES, plain


def test_no_product_module_is_over_the_size_limit() -> None:
    long = []
    for package in ("replicator", "platforms", "state"):
        for path in _modules(ROOT / package):
            if "migrations" in path.parts:
                continue
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}: {lines}")
    assert not long, f"split these by concern (at most {MAX_LINES} lines): {long}"


@pytest.mark.parametrize(
    ("root", "depth"), [("replicator", 2), ("platforms", 2), ("state", 2), ("replicator.sources", 3)]
)
def test_no_import_cycle_among_sub_packages(root: str, depth: int) -> None:
    """The sub-packages (or modules) directly under ``root`` import each other in one direction
    only, counting imports under TYPE_CHECKING and inside functions."""
    import grimp

    graph = grimp.build_graph("replicator", "platforms", "state", exclude_type_checking_imports=False)

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:depth])

    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        if not module.startswith(root + "."):
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(root + ".") and unit(imported) != unit(module):
                edges.setdefault(unit(module), set()).add(unit(imported))
    cycles = sorted(
        f"{a} -> {b} -> ... -> {a}" for a, bs in edges.items() for b in bs if a in _reachable(edges, b)
    )
    assert not cycles, cycles


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
