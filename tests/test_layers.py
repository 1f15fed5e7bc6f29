"""The layer rules, checked on the source, function-level imports included: method math, image
and shard I/O, model loading and metric math import neither Ray nor the layers above them; Ray is
imported only by the execution layer (its drivers include the Ray Train one); fixtures (demo data, small
models) are imported by no product module; no module imports another's private names; no import
cycle exists, not even one a function-level import would hide; and the scripts in ``jobs/``
import only the package (never each other) and never edit ``sys.path``."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("pipeline", "metrics") for p in (REPO / d).rglob("*.py"))
SCRIPTS = sorted((REPO / "jobs").rglob("*.py"))

# Layers from the bottom up; a module may import its own layer and the ones below, never above.
LAYERS = ["errors", "settings", "metrics", "diffusion", "methods", "io", "models", "regions", "config", "transforms", "engine",
          "training", "reports", "execution", "fixtures"]
# What each layer must not import at all, whatever the layer order says.
FORBIDDEN = {
    "settings": ("ray", "fsspec", "pyarrow", "pandas", "PIL", "torch", "numpy"),
    "diffusion": ("ray", "fsspec", "pyarrow", "pandas", "PIL"),
    "methods": ("ray", "fsspec", "pyarrow", "pandas", "PIL"),
    "metrics": ("ray", "fsspec", "pyarrow"),
    "io": ("ray",), "models": ("ray",), "regions": ("ray",), "config": ("ray",), "transforms": ("ray",), "engine": ("ray",), "training": ("ray",),
    "reports": ("ray",),
}


def layer_of(module: str) -> str | None:
    """'pipeline.io.shards' -> 'io'; 'metrics.fid' -> 'metrics'; outside the package -> None."""
    parts = module.split(".")
    if parts[0] == "metrics":
        return "metrics"
    if parts[0] == "pipeline" and len(parts) > 1:
        return parts[1]
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path):
    """(imported module, imported names) for every import in the file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, tuple(a.name for a in node.names)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_layer_rules(path):
    me = module_name(path)
    my_layer = layer_of(me)
    rel = str(path.relative_to(REPO))
    for module, names in imports(path):
        top = module.split(".")[0]
        if top == "ray":
            assert my_layer == "execution", f"{rel} imports ray"
        assert top not in FORBIDDEN.get(my_layer, ()), f"{rel} ({my_layer}) imports {module}"
        their_layer = layer_of(module)
        if their_layer is not None and my_layer in LAYERS and their_layer in LAYERS:
            assert LAYERS.index(their_layer) <= LAYERS.index(my_layer), \
                f"{rel} ({my_layer}) imports {module} ({their_layer}), a layer above it"
        if module != me:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{rel} imports private names {private} from {module}"


def test_every_source_file_belongs_to_a_layer():
    assert [str(p.relative_to(REPO)) for p in SOURCES if layer_of(module_name(p)) not in LAYERS + [None]] == []
    loose = [str(p.relative_to(REPO)) for p in SOURCES
             if p.parent == REPO / "pipeline" and p.name not in ("__init__.py", "errors.py")]
    assert loose == [], "modules belong in a layer's folder"


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (function-level imports included), for the
    package and the scripts."""
    paths = {module_name(p): p for p in SOURCES + SCRIPTS}
    graph = {}
    for me, path in paths.items():
        edges = set()
        for module, names in imports(path):
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                parts = candidate.split(".")
                found = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in paths), None)
                if found is not None and found != me:
                    edges.add(found)
                    break
        graph[me] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_even_through_function_level_imports():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_a_function_level_import_hides():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_import_the_package_only_and_leave_sys_path_alone(path):
    """jobs/ holds command lines: what two of them share lives in the package, so each runs as
    ``python jobs/<script>.py`` (or is imported as ``jobs.<script>`` by a test) as it is."""
    rel = str(path.relative_to(REPO))
    source = path.read_text()
    assert "sys.path.insert" not in source and "sys.path.append" not in source, f"{rel} edits sys.path"
    siblings = {p.stem for p in SCRIPTS}
    for module, _ in imports(path):
        top = module.split(".")[0]
        assert top != "jobs" and module not in siblings, f"{rel} imports another script ({module})"
        assert top != "tests", f"{rel} imports the tests"
