"""The package's shape, read from its source with `ast` (nothing is imported or run).

A circle of imports means neither module can be read, tested or moved without the other, and it
works only while one side imports lazily; a private name imported from another module is a piece
both sides share that has no owner. Both checks count every import a module can execute: at module
level and inside functions (lazy imports), but not `if TYPE_CHECKING:` blocks, which never run.
"""

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autoscale"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name (its `__init__.py`)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def executed_nodes(tree: ast.AST):
    """The nodes of `tree` that can run: everything but the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *executed_nodes(child)])
            continue
        yield node
        yield from executed_nodes(node)


def imports(module: str, path: Path, modules: dict[str, Path]):
    """(imported module, imported name or None, line) for each package import `module` executes."""
    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in executed_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "autoscale":
                    yield owner(alias.name), None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "autoscale":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield submodule, None, node.lineno
                else:
                    yield owner(base), alias.name, node.lineno


def import_graph() -> dict[str, set[str]]:
    """Which modules each module imports. A submodule importing its own package (or a package above
    it) is left out: Python runs the package's `__init__` before the submodule either way."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        graph[module] = {target for target, _, _ in imports(module, path, modules)
                         if target != module and not module.startswith(f"{target}.")}
    return graph


def test_no_modules_of_autoscale_import_each_other_in_a_circle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        circle = error.args[1]
        raise AssertionError(f"import circle: {' -> '.join(circle)}") from None


def test_the_import_graph_sees_lazy_imports():
    """The circle check is only as good as the graph: a function-level import is an edge."""
    assert "autoscale.engine.pipeline_trial" in import_graph()["autoscale.engine.rank"]


def test_no_module_imports_a_private_name_from_another_module():
    modules = module_files()
    private = [f"{module} (line {line}) imports {name} from {target}"
               for module, path in modules.items()
               for target, name, line in imports(module, path, modules)
               if name is not None and name.startswith("_") and target != module]
    assert private == []
