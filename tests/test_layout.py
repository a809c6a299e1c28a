"""The package's shape (issue 12): nothing imports upward, no Python
module over 300 lines, no C file over 900. Lazy imports inside functions
count too: an arrow is an arrow whenever it is followed."""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, Set, Tuple

from tests.helpers.cli import ROOT

PKG = os.path.join(ROOT, "vmsnapshot")

# Lowest first; a module may import its own layer and the ones below.
# Top-level modules (errors, exitstatus, levels, rundir, trust, ...) are
# the bottom, except the entry points.
LAYERS = {"": 0, "mounts": 1, "results": 1, "freeze": 2, "scripts": 3,
          "config": 3, "cycle": 4, "commands": 5, "cli": 6, "__main__": 7}

# Exceptions to the rules above: none (keep it that way).
KNOWN_ARROWS: Set[Tuple[str, str]] = set()
KNOWN_LONG: Set[str] = set()


def layer(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts:
        return 0
    if len(parts) == 1 and parts[0] not in LAYERS:
        return 0
    return LAYERS[parts[0]]


def modules() -> Iterator[Tuple[str, str]]:
    for dirpath, _, files in os.walk(PKG):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield rel[:-len(".__init__")] if rel.endswith(
                    ".__init__") else rel, path


def imports(path: str) -> Set[str]:
    found: Set[str] = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("vmsnapshot"):
            found.add(node.module)
            found.update("%s.%s" % (node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if a.name.startswith("vmsnapshot"))
    # Only what names a module or package (not a function or class).
    return {m for m in found if not m.startswith("vmsnapshot._") and (
        os.path.exists(os.path.join(ROOT, *m.split(".")) + ".py")
        or os.path.isdir(os.path.join(ROOT, *m.split("."))))}


def test_nothing_imports_upward() -> None:
    arrows: Dict[Tuple[str, str], None] = {}
    for module, path in modules():
        for target in imports(path):
            if target != "vmsnapshot" and layer(target) > layer(module):
                arrows[(module, target)] = None
    # A package import comes with its module: keep the module's arrow.
    found = {(m, t) for m, t in arrows
             if not any(t2.startswith(t + ".") for m2, t2 in arrows
                        if m2 == m)}
    assert found - KNOWN_ARROWS == set()


def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_module_sizes() -> None:
    sizes = {os.path.relpath(p, ROOT): count_lines(p) for _, p in modules()}
    csrc = os.path.join(ROOT, "csrc")
    sizes.update({os.path.join("csrc", n): count_lines(os.path.join(csrc, n))
                  for n in os.listdir(csrc) if n.endswith(".c")})
    limit = {".py": 300, ".c": 900}
    long = {p for p, n in sizes.items() if n > limit[os.path.splitext(p)[1]]}
    assert long - KNOWN_LONG == set(), {p: sizes[p] for p in long}


def top_level_imports(path: str) -> Set[str]:
    """The imports run when the module loads (not those in functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("vmsnapshot"):
            for a in node.names:     # a submodule, else the module itself
                sub = "%s.%s" % (node.module, a.name)
                found.add(sub if sub in _names() else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _names() -> Set[str]:
    return {m for m, _ in modules()}


def test_no_import_circles() -> None:
    graph = {m: set() for m, _ in modules()}
    for module, path in modules():
        # A submodule may import its own package (Python allows it).
        graph[module] = {t for t in top_level_imports(path) if t in graph
                         and not module.startswith(t + ".") and t != module}
    done: Set[str] = set()

    def visit(m: str, stack: Tuple[str, ...]) -> None:
        assert m not in stack, " -> ".join(stack[stack.index(m):] + (m,))
        if m in done:
            return
        for t in sorted(graph[m]):
            visit(t, stack + (m,))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())
