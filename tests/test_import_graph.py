"""No import cycle among the modules of `kdprune`.

The graph is read from each module's syntax tree, so it holds every import a module may
run, not only those its first import happens to run: module-level ones, those under
``if TYPE_CHECKING:`` and those inside functions (an import moved into a function to
dodge a cycle still closes it). Edges, for a module ``m`` of package ``p``:

- ``import kdprune.a.b`` and ``from kdprune.a.b import name`` -> ``kdprune.a.b``;
  ``from kdprune.a import b`` -> ``kdprune.a.b`` when ``b`` is a submodule;
  relative imports are resolved against ``p``.
- Importing ``kdprune.a.b`` first runs the ``__init__`` of ``kdprune.a``, so it is also
  an edge to that package, unless the package is one of ``m``'s own (``p`` or above):
  Python initialises (or is initialising) those before ``m`` runs, so reaching a sibling
  by its full name adds no dependency.
- But ``from p import name`` in ``m``, where ``name`` is no submodule, reads what ``p``'s
  ``__init__`` defines or re-exports: an edge to ``p``. A package ``__init__`` that
  re-exports from its submodules plus a submodule that imports from that ``__init__`` is
  a real cycle: the submodule runs while the ``__init__`` is half done, and works only
  as long as the ``__init__``'s import order happens to suit it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys
import textwrap
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import pytest


class Module(NamedTuple):
    path: Path
    is_package: bool


def package_modules(package: str) -> dict[str, Module]:
    """Every module of ``package`` (itself included), found by `pkgutil.walk_packages`."""
    root = importlib.import_module(package)
    mods = {package: Module(Path(root.__file__), True)}
    failed: list[str] = []
    for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=failed.append):
        spec = importlib.util.find_spec(info.name)
        mods[info.name] = Module(Path(spec.origin), info.ispkg)
    assert not failed, f"packages that failed to import: {failed}"
    return mods


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, module: Module, mods: dict[str, Module]) -> dict[str, int]:
    """The modules of ``mods`` that ``name`` imports anywhere in its source, each with the
    first line that imports it (see the module docstring for what counts)."""
    own_pkg = name if module.is_package else name.rpartition(".")[0]
    own = {own_pkg, *_ancestors(own_pkg)}
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        for parent in _ancestors(target):
            if parent in mods and parent not in own:
                out.setdefault(parent, line)
        if target in mods and target != name:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = own_pkg.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            for sub in submodules:
                add(sub, node.lineno)
            if len(submodules) < len(node.names):  # a name the module itself defines
                if base in own and base in mods and base != name:
                    out.setdefault(base, node.lineno)  # from our own package's __init__
                else:
                    add(base, node.lineno)
    return out


def import_graph(package: str) -> dict[str, dict[str, int]]:
    mods = package_modules(package)
    return {name: imports_of(name, m, mods) for name, m in sorted(mods.items())}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """A cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, {}))))
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return "\n".join(f"  {a} (line {graph[a][b]}) -> {b}" for a, b in pairwise(cycle))


def test_kdprune_has_no_import_cycle():
    graph = import_graph("kdprune")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among kdprune modules:\n" + describe(cycle, graph)


def test_the_walk_finds_every_module_file():
    import kdprune

    root = Path(kdprune.__file__).parent
    files = {p for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    assert {m.path for m in package_modules("kdprune").values()} == files


# -- the rules, on small packages written for each case --------------------------------------
CASES = {
    "init re-export + submodule importing the init": (
        {
            "__init__": "from pkg.b import g\nfrom pkg.a import f\n",
            "a": "from pkg import g\n\ndef f():\n    return g()\n",
            "b": "def g():\n    return 1\n",
        },
        ["pkg", "pkg.a", "pkg"],
    ),
    "cycle through a function-level import": (
        {
            "__init__": "",
            "a": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "b": "def g():\n    from pkg.a import f\n    return f\n",
        },
        ["pkg.a", "pkg.b", "pkg.a"],
    ),
    "cycle through TYPE_CHECKING": (
        {
            "__init__": "",
            "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "b": "from pkg.a import *\nclass B: ...\n",
        },
        ["pkg.a", "pkg.b", "pkg.a"],
    ),
    "cycle through another package's __init__": (
        {
            "__init__": "",
            "x/__init__": "from pkg.x.one import one\n",
            "x/one": "from pkg.y.two import two\none = 1\n",
            "y/__init__": "",
            "y/two": "from pkg.x import util\ntwo = 2\n",
            "x/util": "",
        },
        ["pkg.x", "pkg.x.one", "pkg.y.two", "pkg.x"],
    ),
    "relative imports": (
        {"__init__": "", "a": "from . import b\n", "b": "from .a import *\n"},
        ["pkg.a", "pkg.b", "pkg.a"],
    ),
    "init re-export + sibling imported by its full name: no cycle": (
        {
            "__init__": "from pkg.a import f\nfrom pkg.b import g\n",
            "a": "def f():\n    return 1\n",
            "b": "from pkg.a import f\nfrom pkg import a\n\ndef g():\n    return f()\n",
        },
        None,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_rules_on_small_packages(case, tmp_path, monkeypatch):
    files, expected = CASES[case]
    for rel, text in files.items():
        path = tmp_path / "pkg" / f"{rel}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    cycle = find_cycle(import_graph("pkg"))
    if expected is None:
        assert cycle is None
    else:  # the same cycle, from whichever module the walk entered it
        assert cycle is not None and len(cycle) == len(expected)
        assert set(cycle) == set(expected)
