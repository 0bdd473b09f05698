"""The package's folders are layers in the order data flows; a module imports only from its own
layer or a lower one, so the package has no import cycle and a folder can be read without the
ones above it. Checked on the source (every import, including those inside functions)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workflow" / "safecompress"
# Lowest first. `io` (files) sits under everything; `steps` (the entry points) over everything.
LAYERS = (
    "io",
    "config",
    "data",
    "sparse",
    "training",
    "privacy",
    "compression",
    "reporting",
    "steps",
)
# Layers that import no torch: the Snakefile reads config/ and must start fast.
TORCH_FREE = ("io", "config")


def layer_of(module: str) -> str:
    """The layer of a module path like safecompress.compression.dst."""
    parts = module.split(".")
    assert parts[0] == "safecompress", module
    return parts[1] if len(parts) > 1 else "(package)"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> list[str]:
    """Every absolute module path `path` imports (the package's code uses no relative ones)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; import safecompress.… instead"
            names.append(node.module)
            # `from safecompress.x import y` may import the module safecompress.x.y
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    files = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert folders | files == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_higher_layer(path):
    module = ".".join(("safecompress", *path.relative_to(PACKAGE).with_suffix("").parts))
    if module.endswith(".__init__"):
        module = module.removesuffix(".__init__")
    own = layer_of(module)
    if own == "(package)":
        return
    higher = set(LAYERS[LAYERS.index(own) + 1 :])
    upward = [
        name
        for name in imported(path)
        if name.startswith("safecompress.") and layer_of(name) in higher
    ]
    assert not upward, f"{module} ({own}) imports from a higher layer: {upward}"
    if own in TORCH_FREE:
        assert not [name for name in imported(path) if name.split(".")[0] == "torch"]
