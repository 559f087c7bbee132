"""Corrected noisy improvement (Zhou, Ma & Blaschko, 2023): CEI, LogCEI and corrected PI.

With the latent posterior mean ``mu``, standard deviation ``s`` and the incumbent ``x+``
(the observed point with the lowest posterior mean):

- Corrected EI: ``CEI(x) = st * h(zt)`` where
  ``D = f(x+) - f(x) ~ N(mu(x+) - mu(x), st^2)``,
  ``st^2 = s^2(x) + s^2(x+) - 2 k_n(x, x+)``, ``zt = (mu(x+) - mu(x)) / st`` and
  ``h(z) = phi(z) + z Phi(z)``. It needs the joint posterior of ``(f(x), f(x+))``,
  computed per candidate as a ``b x 2 x d`` batch (one 2x2 covariance each).
- LogCEI: ``log h(zt) + log st`` with a stable ``log h`` (as in LogEI).
- Corrected PI (Ma et al., 2019) with a margin ``xi``: ``CPI(x) = Phi((m - xi) / st) =
  P(f(x) < f(x+) - xi)``, ``m = mu(x+) - mu(x)``.
"""

from __future__ import annotations


import torch
from botorch.models.model import Model
from torch import Tensor

from compressbo.exceptions import OptimizerInputError
from compressbo.bo.acquisition.analytic import POSTERIOR_VARIANCE_FLOOR, MomentAcquisition, ei_h, log_ei_h, normal_cdf


# ----------------------------- the corrected improvement math -----------------------------


def corrected_improvement_moments(
    mean: Tensor, covariance: Tensor, min_var: float = POSTERIOR_VARIANCE_FLOOR
) -> tuple[Tensor, Tensor]:
    r"""Moments of ``D = f(x+) - f(x)`` from the joint posterior of ``(f(x), f(x+))``.

    Args:
        mean: A ``batch_shape x 2`` tensor, the posterior means of ``f(x)``, ``f(x+)``.
        covariance: A ``batch_shape x 2 x 2`` tensor, their posterior covariances.
        min_var: Floor of ``st^2``; ``st^2 >= 0`` holds exactly, negative values are
            round-off, and the floor keeps ``st`` and its gradient finite.

    Returns:
        A tuple ``(m, st)`` of ``batch_shape`` tensors: ``m = mu(x+) - mu(x)`` and
        ``st = sqrt(s^2(x) + s^2(x+) - 2 k_n(x, x+))``.
    """
    m = mean[..., 1] - mean[..., 0]
    var = covariance[..., 0, 0] + covariance[..., 1, 1] - 2 * covariance[..., 0, 1]
    return m, var.clamp_min(min_var).sqrt()


def corrected_expected_improvement(m: Tensor, st: Tensor) -> Tensor:
    r"""``E[max(D, 0)] = st * h(m / st)`` for ``D ~ N(m, st^2)``, ``st > 0``."""
    return st * ei_h(m / st)


def log_corrected_expected_improvement(m: Tensor, st: Tensor) -> Tensor:
    r"""``log E[max(D, 0)]``, finite with finite gradients far into the tail."""
    return log_ei_h(m / st) + st.log()


def corrected_probability_of_improvement(m: Tensor, st: Tensor, xi: float = 0.0) -> Tensor:
    r"""``P(D > xi) = Phi((m - xi) / st)`` for ``D ~ N(m, st^2)``."""
    return normal_cdf((m - xi) / st)


# ------------------------------------ the classes ------------------------------------


class _CorrectedImprovement(MomentAcquisition):
    """Base class: improvement over the random incumbent value ``f(x+)``; ``value(m, st)`` per subclass."""

    def __init__(self, model: Model, X_incumbent: Tensor) -> None:
        r"""Set up an improvement over the incumbent's latent value ``f(x+)``.

        Args:
            model: A fitted single-outcome model.
            X_incumbent: A ``1 x d`` (or ``d``) tensor, the incumbent ``x+``.
        """
        super().__init__(model=model)
        self.register_buffer("X_incumbent", X_incumbent.reshape(1, -1))

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(m, st)`` of ``D = f(x+) - f(x)`` for ``batch_shape x 1 x d`` inputs.

        Each candidate is paired with ``x+`` into a ``batch_shape x 2 x d`` batch, so
        the posterior computes one 2x2 covariance per candidate.
        """
        X_incumbent = self.X_incumbent.to(X).expand(*X.shape[:-2], 1, X.shape[-1])
        posterior = self.model.posterior(torch.cat([X, X_incumbent], dim=-2))
        return corrected_improvement_moments(
            posterior.mean.squeeze(-1), posterior.distribution.covariance_matrix
        )


class CorrectedExpectedImprovement(_CorrectedImprovement):
    r"""Corrected noisy expected improvement (Zhou, Ma & Blaschko, ACML 2023).

    ``CEI(x) = E[max(f(x+) - f(x), 0)]`` under the joint posterior of
    ``(f(x), f(x+))``, for minimization.

    Example:
        >>> model = fit_gp(train_X, train_Y, train_Yvar, bounds)
        >>> CEI = CorrectedExpectedImprovement(model, incumbent(model, train_X))
        >>> cei = CEI(test_X)  # test_X: b x 1 x d -> b
    """

    def value(self, m: Tensor, st: Tensor) -> Tensor:
        r"""CEI: ``corrected_expected_improvement(m, st)``."""
        return corrected_expected_improvement(m, st)


class LogCorrectedExpectedImprovement(_CorrectedImprovement):
    r"""Logarithm of the corrected expected improvement, computed stably.

    ``LogCEI(x) = log h(zt) + log st`` with the stable ``log h`` of ``analytic.log_ei_h``: finite
    values and gradients where CEI underflows to 0.
    """

    _log: bool = True

    def value(self, m: Tensor, st: Tensor) -> Tensor:
        r"""LogCEI: ``log_corrected_expected_improvement(m, st)``."""
        return log_corrected_expected_improvement(m, st)


class CorrectedProbabilityOfImprovement(_CorrectedImprovement):
    r"""Corrected probability of improvement (Ma et al., ICCV 2019).

    ``CPI(x) = P(f(x) < f(x+) - xi)`` under the joint posterior of ``(f(x), f(x+))``.

    With ``xi = 0`` the supremum of CPI is approached at ``x -> x+``: the mean
    difference and ``st`` vanish together there and their ratio tends to the directional
    derivative of ``mu`` over that of ``st``, which is large along any descent direction
    of ``mu`` at the incumbent. The maximizer then proposes the incumbent again and
    again. A margin ``xi > 0`` (Kushner's, as for PI) makes CPI vanish at ``x+``; the
    registry's ``cpi`` uses ``CPI_RELATIVE_MARGIN`` times the outcome std by default.

    Example:
        >>> CPI = CorrectedProbabilityOfImprovement(model, incumbent(model, train_X), xi=0.01)
        >>> cpi = CPI(test_X)  # test_X: b x 1 x d -> b
    """

    def __init__(self, model: Model, X_incumbent: Tensor, xi: float = 0.0) -> None:
        r"""Set up CPI.

        Args:
            model: A fitted single-outcome model.
            X_incumbent: A ``1 x d`` (or ``d``) tensor, the incumbent ``x+``.
            xi: The improvement margin ``>= 0``, in objective units.
        """
        if not xi >= 0:
            raise OptimizerInputError(f"the CPI margin xi must be >= 0, got {xi}")
        super().__init__(model, X_incumbent)
        self.xi = float(xi)

    def value(self, m: Tensor, st: Tensor) -> Tensor:
        r"""CPI: ``corrected_probability_of_improvement(m, st, self.xi)``."""
        return corrected_probability_of_improvement(m, st, self.xi)
