"""The package's imports run one way: no import cycle (imports inside functions included) and
``inference`` never imports ``export`` (export builds on inference, not the reverse)."""

import ast
import pathlib

import pytest

import exfuse_keras

PACKAGE_DIR = pathlib.Path(exfuse_keras.__file__).parent
PACKAGE = "exfuse_keras"


def module_names(package_dir: pathlib.Path = PACKAGE_DIR, package: str = PACKAGE) -> dict:
    """{dotted module name: file} of every module of the package (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package,) + parts)] = path
    return modules


def imported_modules(name: str, path: pathlib.Path, modules) -> set:
    """The package's modules that ``name`` imports anywhere in its file (top level, in functions,
    relative or absolute). ``from a import b`` names the module ``a.b`` when it is one, else ``a``."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` of a name that is no module: its deepest enclosing module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package_dir: pathlib.Path = PACKAGE_DIR, package: str = PACKAGE) -> dict:
    """{module: set of the package's modules it imports}."""
    modules = module_names(package_dir, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict):
    """One cycle of ``graph`` as a list ``[a, b, ..., a]``, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return stack[stack.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None  # a diamond
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_imported_modules_reads_every_kind_of_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"):
        (package / name).write_text("")
    (package / "sub" / "d.py").write_text(
        "import os\nfrom . import e\nfrom .. import a\nfrom ..b import thing\n\n"
        "def f():\n    import pkg.c\n    from pkg.sub import d\n")
    (package / "sub" / "e.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .d import f\n")
    graph = import_graph(package, "pkg")
    assert graph["pkg.sub.d"] == {"pkg.sub.e", "pkg.a", "pkg.b", "pkg.c"}
    assert graph["pkg.sub"] == {"pkg.sub.d"}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "exfuse_keras.inference.segmenter" in graph and "exfuse_keras.export.saved_model" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("floor, above", [("exfuse_keras.inference", "exfuse_keras.export")])
def test_a_lower_floor_imports_nothing_from_a_higher_one(floor, above):
    graph = import_graph()
    wrong = sorted(f"{module} -> {target}" for module, targets in graph.items()
                   if module == floor or module.startswith(floor + ".")
                   for target in targets if target == above or target.startswith(above + "."))
    assert not wrong, "\n".join(wrong)
