"""The layer rules, checked on the source: method math, image/shard I/O, model loading and
metric math import neither Ray nor the layers above them; Ray is imported only by the
execution layer and the Ray Train trainer; no module imports another module's private names."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("pipeline", "metrics") for p in (REPO / d).rglob("*.py"))

# Layers from the bottom up; a module may import its own layer and the ones below, never above.
LAYERS = ["errors", "settings", "metrics", "diffusion", "methods", "io", "models", "regions", "config", "transforms", "engine",
          "steps", "reports", "execution", "training"]
# What each layer must not import at all, whatever the layer order says.
FORBIDDEN = {
    "settings": ("ray", "fsspec", "pyarrow", "pandas", "PIL", "torch", "numpy"),
    "diffusion": ("ray", "fsspec", "pyarrow", "pandas", "PIL"),
    "methods": ("ray", "fsspec", "pyarrow", "pandas", "PIL"),
    "metrics": ("ray", "fsspec", "pyarrow"),
    "io": ("ray",), "models": ("ray",), "regions": ("ray",), "config": ("ray",), "transforms": ("ray",), "engine": ("ray",), "steps": ("ray",), "reports": ("ray",),
}
RAY_ALLOWED = {"pipeline/training/ray_train.py"}


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
            assert my_layer == "execution" or rel in RAY_ALLOWED, f"{rel} imports ray"
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
