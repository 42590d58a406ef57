"""The package's layers (ARCHITECTURE.md): each folder imports only from the floors below it, no circles.

Read from the source with ``ast``, so a violation fails here before it can hide behind a lazy import.
"""

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aihwkit_nabn"
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"

#: The floor of each top-level part of the package; a module may import only from lower floors and from its
#: own folder. The package's ``__init__`` (the table of contents) and ``__main__`` sit above everything.
FLOORS = {"errors": 0, "utils": 1, "_aihwkit": 2, "bn": 2, "analog": 3, "training": 4, "evaluation": 5,
          "tasks": 6, "cli": 7, "__main__": 8, "__init__": 9}


def _modules() -> Dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _module_level(body: list) -> Set[int]:
    """ids of the statements that run at import: the module body and its ``try``/``if`` blocks."""
    ids: Set[int] = set()
    for node in body:
        ids.add(id(node))
        if isinstance(node, (ast.Try, ast.If)):
            for block in (node.body, node.orelse, getattr(node, "finalbody", []),
                          *[h.body for h in getattr(node, "handlers", [])]):
                ids |= _module_level(block)
    return ids


def _imports(name: str) -> List[Tuple[str, List[str], bool, int]]:
    """``(imported module, imported names, at module level, line)`` for every aihwkit_nabn import of ``name``."""
    tree = ast.parse(MODULES[name].read_text())
    top = _module_level(tree.body)
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aihwkit_nabn"):
                    found.append((alias.name, [], id(node) in top, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("aihwkit_nabn"):
                continue
            names = [a.name for a in node.names]
            # ``from . import x`` / ``from .pkg import module``: the submodules are what is imported
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in subs:
                found.append((sub, [], id(node) in top, node.lineno))
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not subs:
                found.append((target, rest, id(node) in top, node.lineno))
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _folder(module: str) -> str:
    """The folder a module lives in (``aihwkit_nabn.tasks.cifar10`` for its modules)."""
    return module if _is_package(module) else module.rsplit(".", 1)[0]


def test_every_part_has_a_floor():
    parts = {_part(m) for m in MODULES}
    assert parts <= set(FLOORS), sorted(parts - set(FLOORS))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    """A module imports from lower floors, or from its own folder (or a folder inside it)."""
    floor = FLOORS[_part(module)]
    for target, _names, _, line in _imports(module):
        if _part(target) == _part(module):
            assert target.startswith(_folder(module) + "."), \
                f"{module}:{line} imports {target}: not inside its own folder {_folder(module)}"
            continue
        assert FLOORS[_part(target)] < floor, f"{module}:{line} imports {target} from floor {FLOORS[_part(target)]}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_lazy_and_no_private_imports(module):
    for target, names, top_level, line in _imports(module):
        assert top_level, f"{module}:{line} imports {target} inside a function (a hidden dependency)"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module}:{line} imports private names {private} of {target}"


def test_no_import_circles():
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    # a package's __init__ importing its own modules is the usual table of contents, not a circle
    state: Dict[str, int] = {}
    path: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_lower_floors_never_import_a_task():
    for module in MODULES:
        if FLOORS[_part(module)] < FLOORS["tasks"]:
            assert not any(_part(t) == "tasks" for t, *_ in _imports(module)), module


def test_architecture_md_matches_the_floors():
    rows = re.findall(r"^\|\s*(\d)\s*\|\s*`([^`]+)`", ARCHITECTURE.read_text(), re.M)
    listed = {part.strip("/").replace(".py", ""): int(floor) for floor, part in rows}
    expected = {k: v for k, v in FLOORS.items() if k not in ("__init__", "__main__")}
    assert listed == expected, (listed, expected)
    for part in expected:
        assert (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").is_file(), part


def test_public_api_is_a_table_of_contents():
    import aihwkit_nabn as nb

    assert len(nb.__all__) == len(set(nb.__all__))
    missing = [name for name in nb.__all__ if not hasattr(nb, name)]
    assert not missing, missing
    documented = nb.__doc__
    undocumented = [name for name in nb.__all__ if name not in documented and not name.endswith(("Error", "Warning"))]
    assert not undocumented, undocumented
