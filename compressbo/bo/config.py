"""How the search runs: the acquisition, the design, the budget, the seed, the stopping rule.

:class:`SearchConfig` is one of the three configs of a compression run (with the problem's
and the runtime's, ``compressbo.compression.config``); the command line builds its flags
from the fields' ``metadata`` (see ``compressbo._settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressbo._settings import setting as _setting
from compressbo.bo.models.gp import DEFAULT_KERNEL

__all__ = ["SearchConfig"]


@dataclass
class SearchConfig:
    """The optimizer's settings (see :class:`compressbo.bo.optimizer.Optimizer`)."""

    acq: str = _setting("cei", "acquisition function (cei)")
    iterations: int = _setting(30, "BO iterations after the initial design (30)", resumable=True, type=int)
    init: int | None = _setting(None, "initial Sobol points (max(5, 2d))", type=int)
    kappa: float | None = _setting(
        None,
        "stop once the maximized acquisition value is below kappa, in objective units (log acquisitions compare log kappa; never)",
        type=float,
    )
    known_optimum: float | None = _setting(
        None, "f*, a lower bound of the objective you believe is attained: needed by erm and cbm", type=float
    )
    seed: int = _setting(0, "seed of the search and of the subsamples (0)", type=int)
    num_restarts: int = _setting(10, "L-BFGS-B restarts of the acquisition maximization (10)", type=int)
    raw_samples: int = _setting(512, "raw samples seeding the restarts (512)", type=int)
    warp: str | None = _setting(
        None,
        "scale the GP sees theta on: none, log (log theta on the box's log bounds), learned (Kumaraswamy warp fitted with the GP), "
        "spectral (each layer's log retained weight energy at theta's rank, then the learned warp) or activation (the same with "
        "the layer's output energy on calibration inputs) (learned; none for eign)",
    )
    surrogate: str | None = _setting(
        None,
        "sum (the GP models cost + gamma * error) or composite (the GP models the error; the known cost is added exactly) "
        "(composite; sum with a budget or for acquisitions that need a GP of the objective)",
    )
    kernel: str = _setting(
        DEFAULT_KERNEL,
        "GP kernel: rbf (BoTorch's default) or matern52 (ARD Matern-5/2 with Gamma priors, the corrected-EI paper's) (rbf)",
    )

    @property
    def acquisition_options(self) -> dict[str, Any]:
        """``make_acquisition`` options the settings imply (``f_star`` for erm and cbm)."""
        return {} if self.known_optimum is None else {"f_star": self.known_optimum}

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~compressbo.bo.optimizer.Optimizer` (all but the box)."""
        return {
            "acquisition": self.acq,
            "n_init": self.init,
            "seed": self.seed,
            "kappa": self.kappa,
            "acquisition_options": self.acquisition_options,
            "num_restarts": self.num_restarts,
            "raw_samples": self.raw_samples,
            "kernel": self.kernel,
            "warp": self.warp or "none",
            "surrogate": self.surrogate or "sum",
        }

    def validate(self) -> None:
        """The optimizer's own checks, before anything exists; ``SettingError`` if not."""
        from compressbo.bo.models.gp import check_kernel
        from compressbo.bo.acquisition import acquisition_spec
        from compressbo.bo.models.warping import WARP_NAMES
        from compressbo.bo.optimizer import SURROGATES, applicable_warp, check_search_settings
        from compressbo.exceptions import SettingError

        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise SettingError(f"iterations must be an integer >= 0, got {self.iterations!r}", setting="iterations")
        kwargs = self.optimizer_kwargs()
        check_search_settings(
            kwargs["acquisition"], kwargs["n_init"], None, kwargs["seed"], kwargs["kappa"],
            kwargs["acquisition_options"], kwargs["num_restarts"], kwargs["raw_samples"],
        )
        check_kernel(self.kernel)
        if self.surrogate is not None and self.surrogate not in SURROGATES:
            raise SettingError(f"unknown surrogate {self.surrogate!r}; choose one of {', '.join(SURROGATES)}", setting="surrogate")
        if self.surrogate == "composite" and not acquisition_spec(self.acq).composite:
            raise SettingError(f"acq {self.acq} needs surrogate sum (it works on a GP of the objective itself)", setting="surrogate")
        if self.warp is not None:
            if self.warp not in WARP_NAMES:
                raise SettingError(f"unknown warp {self.warp!r}; choose one of {', '.join(WARP_NAMES)}", setting="warp")
            if self.warp != applicable_warp(self.acq, self.warp):
                raise SettingError(f"acquisition {self.acq} takes warp none, not {self.warp}", setting="warp")
