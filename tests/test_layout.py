"""The package's layers, checked on its import statements (ast), not by convention.

``bo`` knows boxes and noisy numbers and nothing of networks; ``compression`` knows
networks and nothing of GPs; ``experiments`` builds on both and knows nothing of the
application (``app``); the shared modules (exceptions, files, settings, _json, plots) import no layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "compressbo"

# layer -> the layers it must never import
FORBIDDEN = {
    "bo": {"compression", "experiments", "app"},
    "compression": {"bo", "experiments", "app"},
    "experiments": {"app"},
    "exceptions": {"bo", "compression", "experiments", "app"},
    "files": {"bo", "compression", "experiments", "app"},
    "_settings": {"bo", "compression", "experiments", "app"},
    "_json": {"bo", "compression", "experiments", "app"},
    "plots": {"bo", "compression", "experiments", "app"},
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "compressbo" else None


def _module_name(path: Path, package: Path) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names if not node.module)
    return found


def _crossings(root: Path = PACKAGE) -> list[str]:
    crossings = []
    for path in sorted(root.rglob("*.py")):
        layer = _layer(_module_name(path, root))
        for line, module in _imports(path, root):
            target = _layer(module)
            if target is not None and target in FORBIDDEN.get(layer, set()):
                crossings.append(f"{path.relative_to(root.parent)}:{line} ({layer}) imports {module} ({target})")
    return crossings


def test_no_layer_imports_a_layer_it_must_not_know():
    assert _crossings() == []


def test_the_check_sees_a_crossing(tmp_path):
    """The walker is not vacuous: planted ``bo -> compression`` imports, absolute and relative, are reported."""
    fake = tmp_path / "compressbo"
    (fake / "bo").mkdir(parents=True)
    (fake / "bo" / "bad.py").write_text("from compressbo.compression.spec import load_spec\n")
    (fake / "bo" / "relative.py").write_text("import math\nfrom ..compression import spec\n")
    (fake / "compression").mkdir()
    (fake / "compression" / "ok.py").write_text("import torch\nfrom compressbo.exceptions import SpecError\n")
    assert _crossings(fake) == [
        "compressbo/bo/bad.py:1 (bo) imports compressbo.compression.spec (compression)",
        "compressbo/bo/relative.py:2 (bo) imports compressbo.compression (compression)",
    ]


@pytest.mark.parametrize("layer", ["bo", "compression", "experiments", "app"])
def test_every_layer_has_modules(layer):
    assert any((PACKAGE / layer).glob("*.py"))
