"""svlib's structure, read from the code: packages in layers whose imports run one way, no import cycles, and no
import of svlib inside a function (the way cycles used to be hidden)."""

import ast
from pathlib import Path

import pytest

SVLIB = Path(__file__).resolve().parents[1] / "svlib"

LAYERS = ["_version", "core", "frontend", "model", "pruning", "data", "scoring", "training", "analysis", "bench",
          "book", "cli", "__init__", "__main__"]
"""From the bottom up: a module may import from its own layer and the layers before it (README, "Architecture")."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SVLIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SVLIB.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS.index("__init__")
    return LAYERS.index(parts[1])


def _resolve(name: str) -> str | None:
    """The svlib module an import names (``from svlib.x import y`` may name module ``svlib.x.y``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported svlib module, inside a function?, line)`` for every import of svlib in the file."""
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("svlib"):
                for alias in child.names:
                    target = _resolve(f"{child.module}.{alias.name}")
                    out.append((target, in_function, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("svlib"):
                        out.append((_resolve(alias.name), in_function, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


GRAPH = {module: sorted({t for t, _, _ in _imports(path) if t and t != module}) for module, path in MODULES.items()}


def test_every_module_is_in_a_layer():
    unknown = [m for m in MODULES if m != "svlib" and m.split(".")[1] not in LAYERS]
    assert unknown == [], f"modules outside the layers {LAYERS}: {unknown}"


def test_imports_run_one_way():
    upward = [f"{src} (layer {LAYERS[_layer(src)]}) imports {dst} (layer {LAYERS[_layer(dst)]})"
              for src, targets in GRAPH.items() for dst in targets if _layer(dst) > _layer(src)]
    assert upward == []


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_svlib_import_inside_a_function():
    local = [f"{path.relative_to(SVLIB.parent)}:{line} imports {target}" for module, path in MODULES.items()
             for target, in_function, line in _imports(path) if in_function]
    assert local == []


@pytest.mark.parametrize("package", sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1
                                             and (SVLIB / m.split(".")[1]).is_dir()}))
def test_packages_say_what_they_hold(package):
    doc = ast.get_docstring(ast.parse((SVLIB / package / "__init__.py").read_text()))
    assert doc and len(doc) > 40, f"svlib/{package}/__init__.py needs a docstring saying what the package holds"
