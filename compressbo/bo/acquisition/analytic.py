r"""The closed-form pieces of the analytic acquisitions: their floors, and EI's ``h`` and ``log h``.

For ``D ~ N(mu, sigma^2)``, ``E[max(D, 0)] = sigma h(mu / sigma)`` with

    ``h(z) = phi(z) + z Phi(z)``    (:func:`ei_h`)

and ``phi``, ``Phi`` the standard normal pdf and cdf. Every EI-type acquisition here (CEI,
LogCEI, EI-GN, ERM, the discrete KG) is ``sigma h(z)`` or ``log h(z) + log sigma`` for its own
``(z, sigma)``. :func:`log_ei_h` is ``log h`` in a form that stays finite, accurate and
differentiable for ``z`` down to ``-1e100`` (float64), where ``h(z)`` itself underflows
below ``z ~ -38`` and its gradient vanishes below ``z ~ -10`` (Ament et al., 2023,
"Unexpected improvements to expected improvement"). These are the formulas of BoTorch's
analytic EI and LogEI, written with public torch functions only, so compressbo depends on
BoTorch's public API alone.

Two floors keep ``sigma`` and its gradient finite where a posterior variance is (numerically)
zero; they are one floor in two units:

- :data:`POSTERIOR_VARIANCE_FLOOR` (``1e-12``, BoTorch's analytic EI's) floors a *variance*
  before its square root (CEI's ``st^2``, EI-GN's ``s_H^2``);
- :data:`POSTERIOR_STD_FLOOR` (its square root, ``1e-6``) floors a *standard deviation*
  that arrives as one (ERM's ``s_f`` of the transformed GP).

The observation-noise floors of the GP fit are another matter
(``compressbo.bo.models.gp.VARIANCE_FLOOR``, in standardized units).
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from botorch.acquisition.analytic import AnalyticAcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

__all__ = [
    "MomentAcquisition",
    "POSTERIOR_STD_FLOOR",
    "POSTERIOR_VARIANCE_FLOOR",
    "ei_h",
    "log_ei_h",
    "log_normal_pdf",
    "normal_cdf",
    "normal_pdf",
]

POSTERIOR_VARIANCE_FLOOR = 1e-12  # floor of a posterior variance in the analytic acquisitions
POSTERIOR_STD_FLOOR = POSTERIOR_VARIANCE_FLOOR**0.5  # the same floor on a standard deviation

_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_LOG_SQRT_2PI = math.log(2 * math.pi) / 2
_NEG_INV_SQRT_2 = -1 / math.sqrt(2)
# -sqrt(1/2) once more, rounded the other way (-(2 ** -0.5) is 1 ulp from -1 / sqrt(2)): the
# value BoTorch's log-EI uses inside erfcx, kept so log_ei_h is BoTorch's LogEI bit for bit
_NEG_SQRT_HALF = -(2**-0.5)
_LOG_SQRT_PI_DIV_2 = math.log(math.pi / 2) / 2
_LOG_2 = math.log(2)
_LOG_H_SPLIT = -1.0  # log h(z) directly above, by the Mills ratio below
_LOG_H_TAIL = {torch.float64: -1e6, torch.float32: -1e3}  # ~ -1 / sqrt(eps): the leading-order tail


def normal_pdf(z: Tensor) -> Tensor:
    """``phi(z)``, the standard normal density."""
    return _INV_SQRT_2PI * (-0.5 * z.square()).exp()


def log_normal_pdf(z: Tensor) -> Tensor:
    """``log phi(z) = -z^2 / 2 - log sqrt(2 pi)``."""
    return -0.5 * z.square() - _LOG_SQRT_2PI


def normal_cdf(z: Tensor) -> Tensor:
    """``Phi(z) = erfc(-z / sqrt 2) / 2``, the standard normal distribution function."""
    return 0.5 * torch.erfc(_NEG_INV_SQRT_2 * z)


def ei_h(z: Tensor) -> Tensor:
    r"""``h(z) = phi(z) + z Phi(z) = E[max(Z + z, 0)]`` for ``Z ~ N(0, 1)``; EI is ``sigma h(z)``.

    Args:
        z: A tensor of standardized improvements ``(mu(D)) / sigma(D)``, any shape.

    Returns:
        ``h(z) > 0`` elementwise (``0`` once it underflows, below ``z ~ -38`` in float64).
    """
    return normal_pdf(z) + z * normal_cdf(z)


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of ``-log 2`` (Maechler, 2012)."""
    return torch.where(-_LOG_2 < x, (-x.expm1()).log(), (-x.exp()).log1p())


def log_ei_h(z: Tensor) -> Tensor:
    r"""``log h(z)``, finite with finite gradients from ``z = -1e100`` up (float64; float32: ``-1e19``).

    Above ``z = -1`` it is ``log(h(z))``. Below, with the Mills ratio
    ``Phi(z) / phi(z) = sqrt(pi / 2) erfcx(-z / sqrt 2)`` (``erfcx(x) = exp(x^2) erfc(x)``, no
    underflow),

        ``log h(z) = log phi(z) + log(1 - exp(w))``, ``w = log(|z| Phi(z) / phi(z)) < 0``,

    and below ``z ~ -1 / sqrt(eps)``, where ``w`` rounds to 0, its leading order
    ``log phi(z) - 2 log |z|``. Each branch sees only inputs it is valid for (masked), so the
    gradient is finite everywhere.

    Args:
        z: A float32 or float64 tensor of standardized improvements, any shape.

    Returns:
        ``log h(z)``, the shape of ``z``.

    Raises:
        TypeError: ``z`` is not float32 or float64.
    """
    if z.dtype not in _LOG_H_TAIL:
        raise TypeError(f"log_ei_h needs a float32 or float64 tensor, got {z.dtype}")
    tail = _LOG_H_TAIL[z.dtype]
    upper = z.masked_fill(z < _LOG_H_SPLIT, _LOG_H_SPLIT)
    lower = z.masked_fill(z > _LOG_H_SPLIT, _LOG_H_SPLIT)
    moderate = lower.masked_fill(z < tail, tail)
    w = torch.log(torch.special.erfcx(_NEG_SQRT_HALF * moderate) * moderate.abs()) + _LOG_SQRT_PI_DIV_2
    log_lower = log_normal_pdf(z) + torch.where(z > tail, _log1mexp(w), -2 * lower.abs().log())
    return torch.where(z > _LOG_H_SPLIT, ei_h(upper).log(), log_lower)


class MomentAcquisition(AnalyticAcquisitionFunction):
    """An analytic acquisition that is a closed form of two posterior moments per candidate.

    Subclasses give :meth:`moments` (what the posterior says at ``X``) and :meth:`value`
    (the closed form of them); evaluation is ``value(*moments(X))`` for ``q = 1``.
    """

    @abstractmethod
    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""The two moments the acquisition needs at ``batch_shape x 1 x d`` inputs, each ``batch_shape``."""

    @abstractmethod
    def value(self, first: Tensor, second: Tensor) -> Tensor:
        r"""The acquisition from :meth:`moments`' two ``batch_shape`` tensors."""

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate the acquisition.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of acquisition values (larger is better, for minimization).
        """
        return self.value(*self.moments(X))
