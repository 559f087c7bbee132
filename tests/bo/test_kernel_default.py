"""The default GP kernel is written once: ``compressbo.bo.models.gp.DEFAULT_KERNEL``."""

from __future__ import annotations

import ast
from pathlib import Path

import compressbo
from compressbo.bo.config import SearchConfig
from compressbo.bo.models.gp import DEFAULT_KERNEL, KERNELS
from compressbo.experiments.compare import _with_defaults


def test_every_default_kernel_is_the_one_constant() -> None:
    assert DEFAULT_KERNEL in KERNELS
    assert SearchConfig().kernel == DEFAULT_KERNEL
    assert _with_defaults("optimizer_options", {"num_restarts": 2}) == {"kernel": DEFAULT_KERNEL, "num_restarts": 2}
    assert _with_defaults("optimizer_options", {"kernel": "matern52"})["kernel"] == "matern52"


def test_the_default_kernel_s_name_is_not_restated_in_code() -> None:
    """Outside docstrings, the literal names only the kernel tables (keys) and the constant itself."""
    package = Path(compressbo.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == DEFAULT_KERNEL and id(node) not in docstrings:
                found.append(f"{path.relative_to(package).as_posix()}:{node.lineno}")
    allowed = {"bo/models/gp.py", "bo/models/gradient_enhanced.py"}  # DEFAULT_KERNEL, KERNELS, kernel_name, _CURVATURE
    assert {place.split(":")[0] for place in found} <= allowed, found
