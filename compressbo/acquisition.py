r"""Acquisition functions for minimization, and the registry of acquisition names.

Every acquisition is oriented so that a larger value is a better candidate for a
*minimization* problem. The math is in ``docs/acquisitions.md``; in short, with
the latent posterior mean ``mu``, standard deviation ``s`` and the incumbent ``x+``
(the observed point with the lowest posterior mean):

- Corrected EI (Zhou, Ma & Blaschko, 2023): ``CEI(x) = st * h(zt)`` where
  ``D = f(x+) - f(x) ~ N(mu(x+) - mu(x), st^2)``,
  ``st^2 = s^2(x) + s^2(x+) - 2 k_n(x, x+)``, ``zt = (mu(x+) - mu(x)) / st`` and
  ``h(z) = phi(z) + z Phi(z)``. It needs the joint posterior of ``(f(x), f(x+))``,
  computed per candidate as a ``b x 2 x d`` batch (one 2x2 covariance each).
- LogCEI: ``log h(zt) + log st`` with BoTorch's stable ``log h`` (as in LogEI).
- Corrected PI (Ma et al., 2019): ``CPI(x) = Phi(zt) = P(f(x) < f(x+))``.

EI, LogEI, PI, UCB, NEI, qLogNEI and KG are BoTorch's own, set up for minimization.
Add an acquisition by adding one entry to ``ACQUISITIONS``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import (
    _ei_helper,
    _log_ei_helper,
    AnalyticAcquisitionFunction,
    ExpectedImprovement,
    LogExpectedImprovement,
    NoisyExpectedImprovement,
    PosteriorMean,
    ProbabilityOfImprovement,
    UpperConfidenceBound,
)
from botorch.acquisition.knowledge_gradient import qKnowledgeGradient
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.exceptions.warnings import NumericsWarning
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.utils.probability.utils import ndtr as Phi
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from compressbo.errors import UserInputError
from compressbo.gp import incumbent

MIN_VARIANCE = 1e-12  # variance floor of D = f(x+) - f(x), as BoTorch's analytic EI
UCB_BETA = 2.0


# ----------------------------- the corrected improvement math -----------------------------


def corrected_improvement_moments(
    mean: Tensor, covariance: Tensor, min_var: float = MIN_VARIANCE
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
    return st * _ei_helper(m / st)


def log_corrected_expected_improvement(m: Tensor, st: Tensor) -> Tensor:
    r"""``log E[max(D, 0)]``, finite with finite gradients far into the tail."""
    return _log_ei_helper(m / st) + st.log()


def corrected_probability_of_improvement(m: Tensor, st: Tensor) -> Tensor:
    r"""``P(D > 0) = Phi(m / st)`` for ``D ~ N(m, st^2)``."""
    return Phi(m / st)


# ------------------------------------ the classes ------------------------------------


class _CorrectedImprovement(AnalyticAcquisitionFunction):
    """Base class: improvement over the random incumbent value ``f(x+)``."""

    def __init__(self, model: Model, X_incumbent: Tensor) -> None:
        r"""Set up an improvement over the incumbent's latent value ``f(x+)``.

        Args:
            model: A fitted single-outcome model.
            X_incumbent: A ``1 x d`` (or ``d``) tensor, the incumbent ``x+``.
        """
        super().__init__(model=model)
        self.register_buffer("X_incumbent", X_incumbent.reshape(1, -1))

    def _improvement_moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
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

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate CEI.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of CEI values.
        """
        return corrected_expected_improvement(*self._improvement_moments(X))


class LogCorrectedExpectedImprovement(_CorrectedImprovement):
    r"""Logarithm of the corrected expected improvement, computed stably.

    ``LogCEI(x) = log h(zt) + log st`` with BoTorch's ``_log_ei_helper``: finite
    values and gradients where CEI underflows to 0.
    """

    _log: bool = True

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate LogCEI.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of log CEI values.
        """
        return log_corrected_expected_improvement(*self._improvement_moments(X))


class CorrectedProbabilityOfImprovement(_CorrectedImprovement):
    r"""Corrected probability of improvement (Ma et al., ICCV 2019).

    ``CPI(x) = P(f(x) < f(x+))`` under the joint posterior of ``(f(x), f(x+))``.
    """

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate CPI.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of CPI values.
        """
        return corrected_probability_of_improvement(*self._improvement_moments(X))


# ------------------------------------ the registry ------------------------------------


@dataclass(frozen=True)
class AcquisitionSpec:
    """One registered acquisition.

    Attributes:
        build: ``build(model, X_observed, **options) -> AcquisitionFunction``.
        log: Its values are logarithms (``kappa`` is compared on the log scale).
        monte_carlo: It accepts ``X_pending`` (pending points are joint MC samples);
            otherwise pending points are handled by conditioning the model.
    """

    build: Callable[..., AcquisitionFunction]
    log: bool = False
    monte_carlo: bool = False


def _best_mean(model: Model, X_observed: Tensor) -> Tensor:
    """``mu+``: the lowest posterior mean among the observed points."""
    with torch.no_grad():
        return model.posterior(X_observed).mean.min()


def _negate(model: Model) -> ScalarizedPosteriorTransform:
    """Posterior transform turning BoTorch's maximizing MC acquisitions to minimization."""
    weights = torch.tensor([-1.0], dtype=model.train_targets.dtype)
    return ScalarizedPosteriorTransform(weights=weights)


def _search_bounds(model: Model) -> Tensor:
    """The ``2 x d`` box of the model's ``Normalize`` input transform."""
    transform = model.input_transform
    lower = transform.offset.reshape(-1)
    return torch.stack([lower, lower + transform.coefficient.reshape(-1)])


def _ei(model: Model, X_observed: Tensor) -> AcquisitionFunction:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericsWarning)  # EI is compared on purpose
        return ExpectedImprovement(model, _best_mean(model, X_observed), maximize=False)


def _logei(model: Model, X_observed: Tensor) -> AcquisitionFunction:
    return LogExpectedImprovement(model, _best_mean(model, X_observed), maximize=False)


def _pi(model: Model, X_observed: Tensor) -> AcquisitionFunction:
    return ProbabilityOfImprovement(
        model, _best_mean(model, X_observed), maximize=False
    )


def _ucb(model: Model, X_observed: Tensor, beta: float = UCB_BETA) -> AcquisitionFunction:
    return UpperConfidenceBound(model, beta=beta, maximize=False)


def _corrected(cls: type[_CorrectedImprovement]) -> Callable[..., AcquisitionFunction]:
    def build(model: Model, X_observed: Tensor) -> AcquisitionFunction:
        return cls(model, incumbent(model, X_observed))

    return build


def _nei(model: Model, X_observed: Tensor, num_fantasies: int = 20) -> AcquisitionFunction:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericsWarning)
        return NoisyExpectedImprovement(
            model, X_observed, num_fantasies=num_fantasies, maximize=False
        )


def _qlognei(
    model: Model, X_observed: Tensor, X_pending: Tensor | None = None
) -> AcquisitionFunction:
    return qLogNoisyExpectedImprovement(
        model,
        X_baseline=X_observed,
        posterior_transform=_negate(model),
        X_pending=X_pending,
    )


def _kg(
    model: Model,
    X_observed: Tensor,
    num_fantasies: int = 64,
    X_pending: Tensor | None = None,
    bounds: Tensor | None = None,
) -> AcquisitionFunction:
    """One-shot KG with ``current_value = max_x -mu(x)``, so values are true KG."""
    negate = _negate(model)
    bounds = _search_bounds(model) if bounds is None else bounds
    _, current_value = optimize_acqf(
        PosteriorMean(model, posterior_transform=negate),
        bounds=bounds,
        q=1,
        num_restarts=10,
        raw_samples=512,
    )
    return qKnowledgeGradient(
        model,
        num_fantasies=num_fantasies,
        posterior_transform=negate,
        X_pending=X_pending,
        current_value=current_value.detach(),
    )


ACQUISITIONS: dict[str, AcquisitionSpec] = {
    "ei": AcquisitionSpec(_ei),
    "logei": AcquisitionSpec(_logei, log=True),
    "cei": AcquisitionSpec(_corrected(CorrectedExpectedImprovement)),
    "logcei": AcquisitionSpec(_corrected(LogCorrectedExpectedImprovement), log=True),
    "pi": AcquisitionSpec(_pi),
    "cpi": AcquisitionSpec(_corrected(CorrectedProbabilityOfImprovement)),
    "ucb": AcquisitionSpec(_ucb),
    "nei": AcquisitionSpec(_nei),
    "qlognei": AcquisitionSpec(_qlognei, log=True, monte_carlo=True),
    "kg": AcquisitionSpec(_kg, monte_carlo=True),
}
ACQUISITION_NAMES: tuple[str, ...] = tuple(ACQUISITIONS)


def acquisition_spec(name: str) -> AcquisitionSpec:
    """The registry entry of ``name``; ``UserInputError`` listing valid names if unknown."""
    try:
        return ACQUISITIONS[name]
    except (KeyError, TypeError):
        raise UserInputError(
            f"unknown acquisition {name!r}; choose one of: {', '.join(ACQUISITIONS)}."
        ) from None


def is_log_acquisition(name: str) -> bool:
    """Whether the values of acquisition ``name`` are logarithms."""
    return acquisition_spec(name).log


def is_monte_carlo(name: str) -> bool:
    """Whether acquisition ``name`` is Monte Carlo and accepts ``X_pending``."""
    return acquisition_spec(name).monte_carlo


def make_acquisition(
    name: str, model: Model, X_observed: Tensor, **options: object
) -> AcquisitionFunction:
    r"""Build a minimization acquisition function by name.

    Args:
        name: One of ``ACQUISITION_NAMES``.
        model: A fitted single-outcome GP (as returned by ``fit_gp``).
        X_observed: A ``n x d`` tensor of observed inputs; the incumbent (or the
            baseline of NEI / qLogNEI) is taken among them.
        **options: Acquisition-specific options: ``beta`` (ucb), ``num_fantasies``
            (nei, kg), ``X_pending`` (Monte Carlo acquisitions only), ``bounds`` (kg;
            defaults to the box of the model's ``Normalize`` transform).

    Returns:
        A BoTorch ``AcquisitionFunction``: input ``b x 1 x d`` (``b x (1 +
        num_fantasies) x d`` for kg), larger is better.

    Raises:
        UserInputError: ``name`` is unknown (the message lists the valid names) or an
            option does not apply to ``name``.
    """
    spec = acquisition_spec(name)
    try:
        return spec.build(model, X_observed, **options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        hint = (
            "; analytic acquisitions take pending points through the model "
            "(compressbo.gp.condition_on_pending)"
            if "X_pending" in options
            else ""
        )
        raise UserInputError(
            f"acquisition {name!r} does not accept the option(s) {sorted(options)}"
            f"{hint}."
        ) from None
