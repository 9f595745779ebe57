"""The import graph of src/lmforge keeps DESIGN.md's rules, read from the source with `ast` (nothing is
imported):

- `lmforge.model` imports nothing above `lmforge.config`: only model/*, config, errors, hardware (what
  machine this is: the float32 linear reads its kernel probe there) and third-party;
- `lmforge.generate` and `lmforge.train` never import `lmforge.cli`;
- `lmforge.cli` imports only the public API (`lmforge`, `lmforge.errors`, `lmforge.options`) and its own modules;
- `lmforge.serve` is imported only by the CLI, the API (`lmforge`) and itself;
- no import cycles among lmforge modules, through module-level or deferred imports.

Which imports count: every import, at module level or inside a function (a deferred import is still a
dependency, and a cycle closed at call time is still two modules that cannot be understood apart).
Imports under `if TYPE_CHECKING:` never run and count for no rule. Importing `a.b.c` also runs
the packages `a` and `a.b`; those implicit edges are not counted (every submodule would otherwise form a
cycle with a package `__init__` that imports it).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the lmforge module imported (or whose attribute is imported)
    line: int
    deferred: bool  # inside a function: runs at call time

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}" + (
            " (in a function)" if self.deferred else ""
        )


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the lmforge package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((SRC / "lmforge").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str) -> str:
    """The module a dotted name lives in: `lmforge.lm.load` -> `lmforge.lm`."""
    while name not in modules():
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


@functools.cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str, node: ast.stmt, deferred: bool) -> None:
        if (target == "lmforge" or target.startswith("lmforge.")) and _resolve(target) != module:
            found.append(Import(module, _resolve(target), node.lineno, deferred))

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit(stmt, deferred)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, deferred)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: `from . import x`, `from ..io import gguf`
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    # `from lmforge.io import gguf` imports the module lmforge.io.gguf
                    full = f"{base}.{alias.name}"
                    add(full if full in modules() else base, child, deferred)
            visit(child, deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return tuple(dict.fromkeys(found))  # `from m import a, b` is one import of m


def all_imports() -> list[Import]:
    return [imp for module in modules() for imp in imports_of(module)]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read():
    """Guards the rules below against passing vacuously: known edges are found."""
    edges = {(i.source, i.target) for i in all_imports()}
    assert ("lmforge.model.transformer", "lmforge.config") in edges
    assert ("lmforge.lm", "lmforge.io.load") in edges
    assert ("lmforge.tokenizer.core", "lmforge.tokenizer.loaders") in edges
    assert len(modules()) > 50


def test_model_imports_nothing_above_config():
    allowed = ("lmforge.model", "lmforge.config", "lmforge.errors", "lmforge.hardware")
    bad = [
        str(i)
        for i in all_imports()
        if within(i.source, "lmforge.model") and not any(within(i.target, a) for a in allowed)
    ]
    assert not bad, "lmforge.model may import only model/*, config, errors and hardware:\n" + "\n".join(bad)


def test_generate_and_train_never_import_cli():
    bad = [
        str(i)
        for i in all_imports()
        if (within(i.source, "lmforge.generate") or within(i.source, "lmforge.train"))
        and within(i.target, "lmforge.cli")
    ]
    assert not bad, "\n".join(bad)


def test_serve_is_imported_only_by_the_cli_and_the_api():
    bad = [
        str(i)
        for i in all_imports()
        if within(i.target, "lmforge.serve")
        and not (
            i.source == "lmforge" or within(i.source, "lmforge.cli") or within(i.source, "lmforge.serve")
        )
    ]
    assert not bad, "\n".join(bad)


# the public API: the package's exports, its error type, and the option mechanism commands are built with
PUBLIC = ("lmforge", "lmforge.errors", "lmforge.options")


def test_cli_imports_only_the_public_api():
    bad = [
        str(i)
        for i in all_imports()
        if within(i.source, "lmforge.cli") and i.target not in PUBLIC and not within(i.target, "lmforge.cli")
    ]
    assert not bad, f"lmforge.cli may import only {', '.join(PUBLIC)} and lmforge.cli.*:\n" + "\n".join(bad)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for i in all_imports():
        graph[i.source].add(i.target)
    cycles = import_cycles(graph)
    detail = [str(i) for cycle in cycles for i in all_imports() if i.source in cycle and i.target in cycle]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)
