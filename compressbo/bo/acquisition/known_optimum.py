"""The known-optimum acquisitions ERM and CBM (Nguyen & Osborne, 2020) on the transformed GP."""

from __future__ import annotations


import torch
from botorch.models import SingleTaskGP
from torch import Tensor

from compressbo.bo.acquisition.analytic import POSTERIOR_STD_FLOOR, MomentAcquisition, ei_h
from compressbo.bo.models.known_optimum import CBM_BETA, transformed_moments
from compressbo.exceptions import SettingError


def expected_regret(mean: Tensor, std: Tensor, f_star: float) -> Tensor:
    r"""``E[max(F - f*, 0)]`` for ``F ~ N(mean, std^2)`` (the Gaussian lemma)."""
    sigma = std.clamp_min(POSTERIOR_STD_FLOOR)
    return sigma * ei_h((mean - f_star) / sigma)


def confidence_bound_minimization(
    mean: Tensor, std: Tensor, f_star: float, beta: float = CBM_BETA
) -> Tensor:
    r"""``|mean - f*| + sqrt(beta) std``: 0 exactly where ``mean = f*`` and ``std = 0``."""
    return (mean - f_star).abs() + beta**0.5 * std


class _KnownOptimum(MomentAcquisition):
    """Base class: an acquisition on the transformed GP ``f = f* + 0.5 g^2``; ``value(mu_f, s_f)`` per subclass."""

    def __init__(self, model: SingleTaskGP, f_star: float) -> None:
        r"""Set up an acquisition on the transformed GP.

        Args:
            model: The fitted GP on ``g`` (``fit_transformed_gp``).
            f_star: The known minimum value of ``f``.
        """
        super().__init__(model=model)
        self.f_star = float(f_star)

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
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

    def value(self, mean: Tensor, std: Tensor) -> Tensor:
        r"""``-ERM``: the negative expected regret."""
        return -expected_regret(mean, std, self.f_star)


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

    def value(self, mean: Tensor, std: Tensor) -> Tensor:
        r"""``-CBM``: the negative confidence bound."""
        return -confidence_bound_minimization(mean, std, self.f_star, self.beta)


def validated_f_star(name: str, f_star: object) -> float:
    """``f_star`` as a finite float; ``UserInputError`` naming the fix otherwise."""
    if f_star is None:
        raise SettingError(
            f"acquisition {name} needs known_optimum VALUE, the objective's known optimum f_star (a "
            "lower bound you believe is attained; API: acquisition_options={'f_star': VALUE})",
            setting="known_optimum",
        )
    try:
        value = float(f_star)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not torch.isfinite(torch.tensor(value)):
        raise SettingError(f"the known optimum f_star must be a finite number, got {f_star!r}", setting="known_optimum")
    return value
