"""No module imports from a layer above its own, on the map in docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mlflow_dl"


def layer_map() -> dict[str, int]:
    """First part of a module's name under mlflow_dl (or `mlflow_dl` itself) -> its layer, 0 = bottom."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    rows = [line.split(":", 1)[1] for line in block.strip().splitlines()]
    return {name.strip(): len(rows) - 1 - i for i, row in enumerate(rows) for name in row.split(",")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported mlflow_dl module) for every import in the file, inside functions too."""
    def ours(module):
        return module == "mlflow_dl" or module.startswith("mlflow_dl.")

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if ours(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
            if node.module == "mlflow_dl":  # from mlflow_dl import families
                found += [(node.lineno, f"mlflow_dl.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_every_module_is_on_the_map():
    layers = layer_map()
    modules = {_top(".".join(p.relative_to(REPO).with_suffix("").parts).replace(".__init__", ""))
               for p in PACKAGE.rglob("*.py")}
    assert modules - set(layers) == set(), "add these to the layer map in docs/architecture.md"


def test_no_module_imports_from_a_layer_above_its_own():
    layers = layer_map()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).replace(".__init__", "")
        for line, target in imports(path):
            if layers[_top(target)] > layers[_top(name)]:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from mlflow_dl.families import get\n    from mlflow_dl import runtime, sweeps\n")
    layers = layer_map()
    assert imports(sample) == [(2, "mlflow_dl.families"), (3, "mlflow_dl.runtime"), (3, "mlflow_dl.sweeps")]
    assert layers["families"] > layers["sweeps"] > layers["training"] > layers["fit"] > layers["delivery"] > layers["runtime"] > layers["data"]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).replace(".__init__", "")


def edges(path: Path, modules: set[str]) -> set[str]:
    """The mlflow_dl modules a file imports (`from pkg import mod` names the module), inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return found - {module_name(path)}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found, counter = {}, {}, [], [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): edges(p, modules) for p in paths}
    assert circles(graph) == []


def test_the_check_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def private_uses(path: Path, modules: set[str]) -> list[str]:
    """`from mlflow_dl.x import _name` and `x._name` (x an imported mlflow_dl module) in one file."""
    tree, found, aliases = ast.parse(path.read_text()), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlflow_dl"):
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in modules})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_underscore_name_is_used_outside_its_module():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    assert [use for p in paths for use in private_uses(p, modules)] == []


def test_every_module_and_function_is_a_size_one_can_read():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
