r"""Known optimum value: the transformed GP and the ERM / CBM acquisitions.

When the minimum value ``f*`` of the objective is known (synthetic benchmarks) or
believed (``--known-optimum``: a lower bound the user believes is attained), Nguyen &
Osborne (ICML 2020) model ``f(x) = f* + 0.5 * g(x)^2`` with a GP on ``g``, so the
model never predicts below ``f*``. For minimization:

- Observations become ``g_i = sqrt(2 * max(y_i - f*, 0))``. Their noise variance is
  the delta method's ``Var g = (dg/dy)^2 tau_i^2 = tau_i^2 / (2 (y_i - f*))``, with
  the gap ``y_i - f*`` floored at the noise standard deviation ``tau_i``:
  ``tau_i^2 / (2 max(y_i - f*, tau_i))``. Near the floor the delta method diverges
  while the true spread of ``sqrt(2 max(Y - f*, 0))`` for ``Y ~ N(f*, tau^2)`` is of
  order ``tau``, which is what the floor gives.
- ``g`` is a fixed-noise GP fitted like the value GP (``compressbo.gp.fit_gp``).
- Linearized moments of ``f``: ``mu_f = f* + 0.5 mu_g^2`` (so ``mu_f >= f*``) and
  ``s_f^2 = mu_g^2 s_g^2``.
- ERM: ``E[max(f(x) - f*, 0)] = s_f h((mu_f - f*) / s_f)``, the expected regret,
  minimized. CBM: ``|mu_f - f*| + sqrt(beta) s_f``, minimized.

Both acquisitions return the **negative** of the paper's criterion, so that larger is
better like every other acquisition; their values are ``<= 0`` and a ``kappa``
stopping threshold does not apply to them.
"""

from __future__ import annotations

import warnings

import torch
from botorch.acquisition.analytic import _ei_helper, AnalyticAcquisitionFunction
from botorch.exceptions.warnings import InputDataWarning
from botorch.models import SingleTaskGP
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from compressbo.errors import UserInputError
from compressbo.gp import fit_gp, search_bounds, training_data

MIN_VARIANCE = 1e-12  # variance floor of the analytic acquisitions, as BoTorch's analytic EI
CBM_BETA = 2.0  # constant confidence weight (also UCB's)


def transformed_observations(
    Y: Tensor, Yvar: Tensor, f_star: float
) -> tuple[Tensor, Tensor]:
    r"""Observations of ``g = sqrt(2 (f - f*))`` and their delta-method variances.

    Args:
        Y: A ``n x 1`` tensor of observed values.
        Yvar: A ``n x 1`` tensor of their noise variances.
        f_star: The known (or believed) minimum value.

    Returns:
        A tuple ``(g, g_var)`` of ``n x 1`` tensors: ``sqrt(2 max(y - f*, 0))`` and
        ``tau^2 / (2 max(y - f*, tau))``.
    """
    gap = (Y - f_star).clamp_min(0)
    g_var = Yvar / (2 * torch.maximum(gap, Yvar.sqrt()).clamp_min(1e-300))
    return (2 * gap).sqrt(), g_var


def fit_transformed_gp(model: SingleTaskGP, f_star: float) -> SingleTaskGP:
    r"""Fit the GP on ``g`` to the observations held by a fitted value GP.

    Args:
        model: A value GP from ``compressbo.gp.fit_gp`` (possibly conditioned on
            pending points); its data, noise variances and search box are reused.
        f_star: The known (or believed) minimum value.

    Returns:
        A fitted ``SingleTaskGP`` on ``g`` with the same box and transforms.
    """
    X, Y, Yvar = training_data(model)
    g, g_var = transformed_observations(Y, Yvar, f_star)
    with warnings.catch_warnings():
        # g is constant (all 0) when f* is above every observation; compress warns about that
        warnings.simplefilter("ignore", InputDataWarning)
        return fit_gp(X, g, g_var, search_bounds(model))


def transformed_moments(
    mean_g: Tensor, variance_g: Tensor, f_star: float
) -> tuple[Tensor, Tensor]:
    r"""Linearized moments of ``f = f* + 0.5 g^2``.

    Args:
        mean_g: A ``batch_shape`` tensor, posterior means of ``g``.
        variance_g: A ``batch_shape`` tensor, posterior variances of ``g``.
        f_star: The known minimum value.

    Returns:
        A tuple ``(mean_f, std_f)`` of ``batch_shape`` tensors:
        ``f* + 0.5 mu_g^2`` and ``|mu_g| s_g``.
    """
    return f_star + 0.5 * mean_g**2, mean_g.abs() * variance_g.clamp_min(0).sqrt()


def expected_regret(mean: Tensor, std: Tensor, f_star: float) -> Tensor:
    r"""``E[max(F - f*, 0)]`` for ``F ~ N(mean, std^2)`` (the Gaussian lemma)."""
    sigma = std.clamp_min(MIN_VARIANCE**0.5)
    return sigma * _ei_helper((mean - f_star) / sigma)


def confidence_bound_minimization(
    mean: Tensor, std: Tensor, f_star: float, beta: float = CBM_BETA
) -> Tensor:
    r"""``|mean - f*| + sqrt(beta) std``: 0 exactly where ``mean = f*`` and ``std = 0``."""
    return (mean - f_star).abs() + beta**0.5 * std


class _KnownOptimum(AnalyticAcquisitionFunction):
    """Base class: an acquisition on the transformed GP ``f = f* + 0.5 g^2``."""

    def __init__(self, model: SingleTaskGP, f_star: float) -> None:
        r"""Set up an acquisition on the transformed GP.

        Args:
            model: The fitted GP on ``g`` (``fit_transformed_gp``).
            f_star: The known minimum value of ``f``.
        """
        super().__init__(model=model)
        self.f_star = float(f_star)

    def transformed_moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(mu_f, s_f)`` at ``batch_shape x 1 x d`` inputs, each ``batch_shape``."""
        posterior = self.model.posterior(X)
        return transformed_moments(
            posterior.mean.reshape(X.shape[:-2]),
            posterior.variance.reshape(X.shape[:-2]),
            self.f_star,
        )


class NegativeExpectedRegret(_KnownOptimum):
    r"""``-ERM(x) = -E[max(f(x) - f*, 0)]`` on the transformed GP (Nguyen & Osborne).

    Example:
        >>> g_model = fit_transformed_gp(model, f_star=0.0)
        >>> acquisition = NegativeExpectedRegret(g_model, f_star=0.0)
        >>> values = acquisition(test_X)  # test_X: b x 1 x d -> b, all <= 0
    """

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate ``-ERM``.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of negative expected regrets.
        """
        return -expected_regret(*self.transformed_moments(X), self.f_star)


class NegativeConfidenceBoundMinimization(_KnownOptimum):
    r"""``-CBM(x) = -(|mu_f(x) - f*| + sqrt(beta) s_f(x))`` on the transformed GP."""

    def __init__(self, model: SingleTaskGP, f_star: float, beta: float = CBM_BETA) -> None:
        r"""Set up ``-CBM``.

        Args:
            model: The fitted GP on ``g`` (``fit_transformed_gp``).
            f_star: The known minimum value of ``f``.
            beta: Confidence weight (``sqrt(beta)`` multiplies ``s_f``), ``>= 0``.
        """
        super().__init__(model, f_star)
        self.beta = float(beta)

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate ``-CBM``.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of negative confidence bounds.
        """
        mean, std = self.transformed_moments(X)
        return -confidence_bound_minimization(mean, std, self.f_star, self.beta)


def validated_f_star(name: str, f_star: object) -> float:
    """``f_star`` as a finite float; ``UserInputError`` naming the fix otherwise."""
    if f_star is None:
        raise UserInputError(
            f"acquisition {name!r} needs the known optimum value: pass "
            "acquisition_options={'f_star': VALUE} (CLI: --known-optimum VALUE)."
        )
    try:
        value = float(f_star)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not torch.isfinite(torch.tensor(value)):
        raise UserInputError(
            f"the known optimum f_star must be a finite number, got {f_star!r}."
        )
    return value
