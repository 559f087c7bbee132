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
- ``g`` is a fixed-noise GP fitted like the value GP (``compressbo.bo.models.gp.fit_gp``).
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
from botorch.exceptions.warnings import InputDataWarning
from botorch.models import SingleTaskGP
from torch import Tensor

from compressbo.bo.models.gp import fit_gp, kernel_name, search_bounds, training_data
from compressbo.bo.models.warping import known_scale_of, warp_of


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
        model: A value GP from ``compressbo.bo.models.gp.fit_gp`` (possibly conditioned on
            pending points); its data, noise variances and search box are reused.
        f_star: The known (or believed) minimum value.

    Returns:
        A fitted ``SingleTaskGP`` on ``g`` with the same box, warping, transforms and kernel
        (``compressbo.bo.models.gp.kernel_name`` of ``model``).
    """
    X, Y, Yvar = training_data(model)
    g, g_var = transformed_observations(Y, Yvar, f_star)
    with warnings.catch_warnings():
        # g is constant (all 0) when f* is above every observation; compress warns about that
        warnings.simplefilter("ignore", InputDataWarning)
        return fit_gp(X, g, g_var, search_bounds(model), kernel=kernel_name(model), warp=warp_of(model),
                      known_scale=known_scale_of(model))


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
