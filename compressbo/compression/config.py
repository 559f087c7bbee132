"""What a compression problem is, and where and how it is evaluated: two configs.

:class:`ProblemConfig` says *what* is minimized (the network, its weights, the data, the
subsample size, ``gamma``, the objective, the box, the rank scheme and the factorization);
:class:`RuntimeConfig` says *where and how* it is evaluated (device, batch size, autocast, threads, data pipeline).
Each field documents itself (``compressbo._settings.setting``): its ``--help`` line, its
flag's argparse keywords and its role (``defines_problem``, ``resumable``).

``validate`` checks what can be checked without loading anything, by calling the checks of
the components that own each setting, so an error is raised once, with one message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compressbo._settings import setting
from compressbo.exceptions import SettingError

__all__ = ["DATA_ON_DEVICE", "ProblemConfig", "RuntimeConfig", "samples_range"]

DATA_ON_DEVICE = {"auto": None, "yes": True, "no": False}  # data_on_device -> the evaluator's argument


def _samples(text: str) -> int | str:
    return int(text) if text.isdigit() else text


@dataclass
class ProblemConfig:
    """What is minimized: ``ratio(theta) + gamma * error(theta)`` of one network on one dataset."""

    model: str = setting("fc3", "spec name in models/ or a spec .toml path (fc3)", defines_problem=True)
    weights: str | None = setting(
        None, "'random', a torchvision weights name (IMAGENET1K_V1) or a .pth state dict (spec default)", defines_problem=True
    )
    data: str | None = setting(None, "dataset: digits, mnist or imagenet (spec default)", defines_problem=True)
    data_dir: str | None = setting(None, "directory of the MNIST IDX files or of the ImageNet root (holding val/)")
    download: bool = setting(False, "allow downloading MNIST into --data-dir", action="store_true")
    samples: int | str = setting(
        200, "validation examples per evaluation, m (200); START:END grows m linearly over the run",
        defines_problem=True, type=_samples,
    )
    gamma: float = setting(1.0, "weight of the error in ratio + gamma * error (1.0)", defines_problem=True, type=float)
    objective: str = setting("error", "error or distill (error)", defines_problem=True)
    bounds: tuple[float, float] | None = setting(
        None, "theta box of every layer, 0 < LO < HI <= 1 (spec default)",
        defines_problem=True, nargs=2, type=float, metavar=("LO", "HI"),
    )
    scheme: str | None = setting(
        None, "rank scheme: params (theta = fraction of parameters kept) or plain (spec default)", defines_problem=True
    )
    method: str | None = setting(None, "conv factorization for all layers: tucker2 or vh (spec default)", defines_problem=True)
    cost: str = setting(
        "params",
        "known cost in cost + gamma * error: params (compressed layers' parameter ratio) or flops (their MAC ratio at the spec's input size) (params)",
        defines_problem=True,
    )
    target_ratio: float | None = setting(
        None, "budget: minimize the error subject to a compressed-layer parameter ratio <= R (with --cost params; none)",
        defines_problem=True, type=float, metavar="R",
    )
    target_flops: float | None = setting(
        None, "budget: minimize the error subject to a compressed-layer FLOPs ratio <= R (with --cost flops; none)",
        defines_problem=True, type=float, metavar="R",
    )
    final_samples: int | None = setting(
        None, "score the recommendation on a fixed seeded subset of N validation examples (the full set)",
        resumable=True, type=int, metavar="N",
    )

    def validate(self) -> None:
        """Check every problem setting that needs nothing loaded; :class:`SettingError` if not."""
        from compressbo.compression.budget import check_budget_settings
        from compressbo.compression.cost import check_cost
        from compressbo.compression.data import check_dataset_name
        from compressbo.compression.lowrank import check_method, check_scheme
        from compressbo.compression.objective import check_objective_settings
        from compressbo.compression.spec import check_bounds

        first, last = samples_range(self.samples)
        check_objective_settings(self.objective, self.gamma, min(first, last))
        if self.data is not None:
            check_dataset_name(self.data)
        if self.bounds is not None:
            self.bounds = check_bounds(self.bounds, "bounds", setting="bounds")
        if self.scheme is not None:
            check_scheme(self.scheme)
        if self.method is not None:
            check_method(self.method)
        _check_positive(self.final_samples, "final_samples")
        check_cost(self.cost)
        check_budget_settings(self)


@dataclass
class RuntimeConfig:
    """Where and how evaluations run; results do not depend on it (except ``amp``'s rounding)."""

    device: str = setting(
        "auto", "auto, cpu, cuda or cuda:N; a list cuda:0,cuda:2 spreads parallel workers over those GPUs (auto)",
        resumable=True,
    )
    batch_size: int | None = setting(None, "evaluation batch size (chosen for the device)", resumable=True, type=int)
    amp: bool = setting(False, "evaluate under autocast", defines_problem=True, action="store_true")
    threads: int | None = setting(
        None, "threads of the one-time decomposition and the HOOI refinement (the machine's free cores)",
        resumable=True, type=int,
    )
    data_workers: int | None = setting(
        None, "threads decoding validation images, overlapping the forward pass (this process's share of the cores, at most 8)",
        resumable=True, type=int, metavar="N",
    )
    data_on_device: str = setting(
        "auto", "keep the decoded validation images on the GPU: auto (when they fit a quarter of its free memory), yes or no (auto)",
        resumable=True, nargs="?", const="yes", choices=tuple(DATA_ON_DEVICE), metavar="auto|yes|no",
    )

    def validate(self) -> None:
        """Check the device exists and the batch size is positive; :class:`SettingError` if not."""
        from compressbo.compression.evaluator import check_batch_size, resolve_device
        from compressbo.compression.images import check_data_workers

        resolve_device(self.device)
        check_batch_size(self.batch_size)
        _check_positive(self.threads, "threads")
        check_data_workers(self.data_workers)
        if self.data_on_device not in DATA_ON_DEVICE:
            raise SettingError(
                f"data_on_device must be one of {', '.join(DATA_ON_DEVICE)}, got {self.data_on_device!r}",
                setting="data_on_device",
            )

    @property
    def pool_on_device(self) -> bool | None:
        """``data_on_device`` as the evaluator takes it: ``True``, ``False`` or ``None`` (auto)."""
        return DATA_ON_DEVICE[self.data_on_device]


def _check_positive(value: int | None, name: str) -> None:
    """``None`` or an integer >= 1, else a :class:`SettingError` naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SettingError(f"{name} must be an integer >= 1, got {value!r}", setting=name)


def samples_range(samples: int | str) -> tuple[int, int]:
    """``(m at the first evaluation, m at the last)`` from ``M`` or ``"START:END"``."""
    match = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", str(samples))
    first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
    if first < 1 or last < 1:
        raise SettingError(f"samples {samples} must be a positive integer M or a range START:END of them", setting="samples")
    return first, last
