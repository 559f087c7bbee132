"""Export a (compressed) network for other runtimes: ONNX, TorchScript or a plain state dict.

Every exporter writes its file atomically and then checks it against PyTorch:

* ``onnx``: ``torch.onnx.export`` (the ``torch.export``-based exporter) at the spec's input size
  with a dynamic batch dimension; ``onnx.checker`` validates the file; ONNX Runtime runs it
  at each of :data:`CHECK_BATCH_SIZES` and its outputs are compared with PyTorch's.
* ``torchscript``: ``torch.jit.trace``, reloaded with ``torch.jit.load`` and compared the same way.
* ``state-dict``: the ``state_dict()`` as a ``.pth`` file (``torch.load(..., weights_only=True)``),
  reloaded into the network and compared tensor by tensor (``max_abs_diff`` 0).

A comparison fails (:class:`ExportCheckError`) when the largest absolute difference exceeds
``tolerance * max(1, max |PyTorch output|)``. ``onnx`` needs the optional packages of the
``compressbo[export]`` extra (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressbo.compression.compressor import parameter_dtype
from compressbo.exceptions import CompressboError, SettingError
from compressbo.files import atomic_write

__all__ = ["EXPORT_EXTRA", "FORMATS", "CHECK_BATCH_SIZES", "ExportCheckError", "ExportResult", "export_network"]

CHECK_BATCH_SIZES = (1, 7)  # the dynamic batch dimension is exercised at two sizes
DEFAULT_TOLERANCE = 1e-4
EXPORT_EXTRA = "pip install 'compressbo[export]'"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportCheckError(CompressboError):
    """The exported file does not reproduce PyTorch's outputs within the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """An exported file and how closely it reproduces PyTorch.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``state-dict``.
        path: The file written.
        max_abs_diff: Largest absolute output difference over the checked batches.
        tolerance: The bound it was held to (``tolerance * max(1, max |output|)``).
        batch_sizes: Batch sizes the check ran at.
        bytes: Size of the file.
    """

    format: str
    path: Path
    max_abs_diff: float
    tolerance: float
    batch_sizes: tuple[int, ...] = field(default=CHECK_BATCH_SIZES)
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "batch_sizes": list(self.batch_sizes)}


def require(module_name: str, what: str) -> Any:
    """Import ``module_name`` or raise a one-line :class:`SettingError` naming the extra."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise SettingError(
            f"{what} needs the optional package {module_name}, which is not installed; {EXPORT_EXTRA}",
            setting="format",
        ) from None


def _check_batches(input_size: Sequence[int], dtype: torch.dtype, batch_sizes: Sequence[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn((b, *input_size), generator=generator).to(dtype) for b in batch_sizes]


def _compare(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], Any],
    batches: Sequence[torch.Tensor],
    tolerance: float,
    what: str,
) -> tuple[float, float]:
    """``(max abs diff, bound)`` of ``candidate`` vs ``reference`` on ``batches``; ExportCheckError above the bound."""
    worst, bound = 0.0, tolerance
    with torch.inference_mode():
        for x in batches:
            expected = reference(x).float()
            got = torch.as_tensor(candidate(x)).float()
            if got.shape != expected.shape:
                raise ExportCheckError(f"{what} gives outputs of shape {tuple(got.shape)} at batch {x.shape[0]}, "
                                       f"PyTorch {tuple(expected.shape)}")
            worst = max(worst, float((got - expected).abs().max()))
            bound = max(bound, tolerance * max(1.0, float(expected.abs().max())))
    if not worst <= bound:
        raise ExportCheckError(f"{what} differs from PyTorch by {worst:.3g} (max abs), above the tolerance {bound:.3g}")
    return worst, bound


def _export_onnx(module: nn.Module, input_size: Sequence[int], path: Path, tolerance: float,
                 batch_sizes: Sequence[int]) -> tuple[float, float]:
    onnx = require("onnx", "ONNX export")
    ort = require("onnxruntime", "ONNX export")
    require("onnxscript", "ONNX export (torch's exporter)")
    dtype = parameter_dtype(module)
    example = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(0)).to(dtype)

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )

    atomic_write(path, write)
    onnx.checker.check_model(str(path), full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda x: session.run(None, {name: x.numpy()})[0]  # noqa: E731
    return _compare(module, run, _check_batches(input_size, dtype, batch_sizes), tolerance, f"ONNX Runtime on {path.name}")


def _export_torchscript(module: nn.Module, input_size: Sequence[int], path: Path, tolerance: float,
                        batch_sizes: Sequence[int]) -> tuple[float, float]:
    dtype = parameter_dtype(module)
    example = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(0)).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
        atomic_write(path, lambda temporary: torch.jit.save(traced, str(temporary)))
        loaded = torch.jit.load(str(path), map_location="cpu")
    return _compare(module, loaded, _check_batches(input_size, dtype, batch_sizes), tolerance, f"TorchScript {path.name}")


def _export_state_dict(module: nn.Module, input_size: Sequence[int], path: Path, tolerance: float,
                       batch_sizes: Sequence[int]) -> tuple[float, float]:
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    atomic_write(path, lambda temporary: torch.save(state, temporary))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if loaded.keys() != state.keys():
        raise ExportCheckError(f"{path} holds other keys than the network's state dict")
    worst = max((float((loaded[k].double() - state[k].double()).abs().max()) for k in state if state[k].numel()), default=0.0)
    if worst > 0:
        raise ExportCheckError(f"{path} does not reproduce the state dict (max abs diff {worst:.3g})")
    return worst, 0.0


@dataclass(frozen=True)
class Format:
    """An export format: its exporter and the file suffix it writes."""

    export: Callable[[nn.Module, Sequence[int], Path, float, Sequence[int]], tuple[float, float]]
    suffix: str


FORMATS: dict[str, Format] = {
    "onnx": Format(_export_onnx, ".onnx"),
    "torchscript": Format(_export_torchscript, ".torchscript.pt"),
    "state-dict": Format(_export_state_dict, ".state_dict.pth"),
}


def export_network(
    module: nn.Module,
    input_size: Sequence[int],
    format: str,
    path: str | os.PathLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
) -> ExportResult:
    """Write ``module`` in ``format`` to ``path`` and check the file against PyTorch.

    Args:
        module: The network (moved to the CPU, eval mode).
        input_size: One input's shape without the batch dimension (the spec's ``input_size``).
        format: A key of :data:`FORMATS`.
        path: The file to write (its folder must exist; a symbolic link is refused).
        tolerance: Relative bound of the output comparison (see the module docstring).
        batch_sizes: Batch sizes the exported file is run at.

    Raises:
        SettingError: Unknown format, or the format's optional packages are missing.
        ExportCheckError: The file does not reproduce PyTorch within the tolerance.
    """
    if format not in FORMATS:
        raise SettingError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}", setting="format")
    path = Path(path)
    if path.is_symlink():
        raise SettingError(f"{path} is a symbolic link; compressbo does not write through links", setting="out")
    module = module.cpu().eval()
    worst, bound = FORMATS[format].export(module, tuple(input_size), path, tolerance, tuple(batch_sizes))
    return ExportResult(format, path, worst, bound, tuple(batch_sizes), path.stat().st_size)
