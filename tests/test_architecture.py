"""Architecture rules of the package, checked on its source (no imports run).

1. Exactly one module, `keras_effconv/_model_graph.py`, touches Keras'
   private API: `keras.src` and the private graph attributes of layers,
   tensors and Functional models. Everything else asks that module, so a
   Keras upgrade that moves those internals is fixed in one place.
2. No package module imports a module that imports it back.

Both read the source with `ast`, so docstrings and comments that merely
mention a private name do not count, while function-local imports and
`getattr(layer, "_inbound_nodes", ...)` do.
"""

import ast
import pathlib

PACKAGE = "keras_effconv"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
GRAPH_MODULE = f"{PACKAGE}._model_graph"

# Keras' private graph bookkeeping (ops/node.py, ops/function.py,
# models/functional.py, models/sequential.py).
PRIVATE_GRAPH_ATTRIBUTES = frozenset(
    {
        "_inbound_nodes",
        "_outbound_nodes",
        "_keras_history",
        "_nodes_by_depth",
        "_nodes",
        "_operations",
        "_operations_by_depth",
        "_run_through_graph",
        "_get_operation_for_node",
        "_operation_node",
        "_functional",
    }
)


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    """`{module name: (path, parsed tree)}` for every module of the package."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        modules[_module_name(path)] = (path, ast.parse(path.read_text(), filename=str(path)))
    return modules


def _is_package(name, modules):
    return modules[name][0].name == "__init__.py"


def _private_api_uses(tree):
    """`[(line, what)]` for every use of `keras.src` or a private graph attribute."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            uses += [(node.lineno, f"import {a.name}") for a in node.names if a.name.startswith("keras.src")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "keras.src" or node.module.startswith("keras.src."):
                uses.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "keras" and any(a.name == "src" for a in node.names):
                uses.append((node.lineno, "from keras import src"))
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE_GRAPH_ATTRIBUTES:
                uses.append((node.lineno, f".{node.attr}"))
            elif node.attr == "src" and isinstance(node.value, ast.Name) and node.value.id == "keras":
                uses.append((node.lineno, "keras.src"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # getattr/hasattr/setattr with the name as a string, importlib paths
            if node.value in PRIVATE_GRAPH_ATTRIBUTES or node.value.startswith("keras.src"):
                uses.append((node.lineno, repr(node.value)))
    return sorted(set(uses))


def test_only_the_graph_module_touches_private_keras_api():
    modules = _modules()
    assert GRAPH_MODULE in modules, f"{GRAPH_MODULE} is missing"
    offenders = {}
    for name, (path, tree) in modules.items():
        if name == GRAPH_MODULE:
            continue
        uses = _private_api_uses(tree)
        if uses:
            offenders[str(path.relative_to(ROOT.parent))] = uses
    report = "\n".join(
        f"  {path}: " + ", ".join(f"line {line} {what}" for line, what in uses)
        for path, uses in sorted(offenders.items())
    )
    assert not offenders, (
        f"Only {GRAPH_MODULE} may use keras.src or Keras' private graph attributes "
        f"({', '.join(sorted(PRIVATE_GRAPH_ATTRIBUTES))}); add a function there instead. "
        f"Found:\n{report}"
    )


def _resolve(name, modules):
    """The package module that `import name` loads, or None outside the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules=None):
    """`{module: {imported package module: first line}}` from every import statement.

    `import a.b` and `from a import b` with `b` a module import module
    `a.b`; `from a.b import name` (a function, class, ...) imports `a.b`;
    a package name stands for its `__init__`. Imports anywhere count
    (function-local, `try`, `if TYPE_CHECKING`). The parent packages Python
    also runs on the way are not counted: every package `__init__` that
    re-exports its submodules would otherwise be in a trivial cycle.
    """
    modules = modules or _modules()
    graph = {}
    for name, (_, tree) in modules.items():
        edges = graph.setdefault(name, {})
        package = name if _is_package(name, modules) else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, modules) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else _resolve(base, modules))
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _cycle_path(graph, component):
    """One cycle through the modules of a strongly connected component."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        following = sorted(w for w in graph[path[-1]] if w in members)
        if start in following and len(path) > 1:
            return path + [start]
        fresh = [w for w in following if w not in seen]
        if not fresh:  # closes on an earlier module: report that loop
            loop_start = next(w for w in following if w in seen)
            return path[path.index(loop_start) :] + [loop_start]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_no_module_imports_a_module_that_imports_it_back():
    modules = _modules()
    graph = import_graph(modules)
    mutual = sorted(
        (a, b, graph[a][b], graph[b][a]) for a in graph for b in graph[a] if a < b and a in graph.get(b, {})
    )
    longer = [
        " -> ".join(_cycle_path(graph, component))
        for component in _cycles(graph)
        if len(component) > 2 or not any({a, b} == set(component) for a, b, _, _ in mutual)
    ]
    report = "\n".join(f"  {a} (line {la}) <-> {b} (line {lb})" for a, b, la, lb in mutual)
    if longer:
        report += "\nLonger import cycles:\n" + "\n".join(f"  {c}" for c in longer)
    assert not mutual, f"Modules that import each other:\n{report}"


def test_no_longer_import_cycles():
    graph = import_graph()
    cycles = [" -> ".join(_cycle_path(graph, component)) for component in _cycles(graph)]
    assert not cycles, "Import cycles between package modules:\n" + "\n".join(f"  {c}" for c in cycles)


def test_import_graph_resolution():
    """The resolution rules on a toy package layout (no files needed)."""
    sources = {
        f"{PACKAGE}": "from keras_effconv import a\n",
        f"{PACKAGE}.a": "from keras_effconv.a import b\nfrom keras_effconv.a.b import f\n",
        f"{PACKAGE}.a.b": "def g():\n    from .. import c\n    import keras_effconv.a\n",
        f"{PACKAGE}.c": "from keras_effconv.a import name_in_init\nimport numpy\n",
    }
    packages = {f"{PACKAGE}", f"{PACKAGE}.a"}
    modules = {
        name: (pathlib.Path("__init__.py" if name in packages else "m.py"), ast.parse(src))
        for name, src in sources.items()
    }
    graph = import_graph(modules)
    assert graph == {
        f"{PACKAGE}": {f"{PACKAGE}.a": 1},
        f"{PACKAGE}.a": {f"{PACKAGE}.a.b": 1},
        f"{PACKAGE}.a.b": {f"{PACKAGE}.c": 2, f"{PACKAGE}.a": 3},
        f"{PACKAGE}.c": {f"{PACKAGE}.a": 1},
    }
    assert _cycles(graph) == [[f"{PACKAGE}.a", f"{PACKAGE}.a.b", f"{PACKAGE}.c"]]
