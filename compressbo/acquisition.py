r"""Acquisition functions for minimization, and the registry of acquisition names.

Every acquisition is oriented so that a larger value is a better candidate for a
*minimization* problem. In short, with
the latent posterior mean ``mu``, standard deviation ``s`` and the incumbent ``x+``
(the observed point with the lowest posterior mean):

- Corrected EI (Zhou, Ma & Blaschko, 2023): ``CEI(x) = st * h(zt)`` where
  ``D = f(x+) - f(x) ~ N(mu(x+) - mu(x), st^2)``,
  ``st^2 = s^2(x) + s^2(x+) - 2 k_n(x, x+)``, ``zt = (mu(x+) - mu(x)) / st`` and
  ``h(z) = phi(z) + z Phi(z)``. It needs the joint posterior of ``(f(x), f(x+))``,
  computed per candidate as a ``b x 2 x d`` batch (one 2x2 covariance each).
- LogCEI: ``log h(zt) + log st`` with BoTorch's stable ``log h`` (as in LogEI).
- Corrected PI (Ma et al., 2019) with a margin ``xi``: ``CPI(x) = Phi((m - xi) / st) =
  P(f(x) < f(x+) - xi)``, ``m = mu(x+) - mu(x)``; ``xi`` defaults to ``CPI_RELATIVE_MARGIN``
  times the outcome std (with ``xi = 0`` the maximizer converges onto the incumbent).

- EI via gradient norms, "EI-GN": EI of ``H(x) = f(x) + lam ||grad f(x)||^2``, with
  ``H`` moment-matched to a Gaussian from the joint posterior of ``(f, grad f)``
  (``compressbo.gradients``) and ``H+ = min_i mu_H(x_i)``; ``lam = 0`` is EI. With
  observed gradients the joint posterior comes from a gradient-enhanced GP
  (``compressbo.gradient_gp``, any ``JointPosteriorModel``) instead.
- ERM and CBM (Nguyen & Osborne, 2020) need the known optimum ``f_star`` and work on
  a transformed GP (``compressbo.known_optimum``); they return the negated criterion.
- ``random``: scrambled Sobol points, no model (``compressbo.optimizer.Optimizer``
  draws them; there is no acquisition function to build).

EI, LogEI, PI, UCB, NEI, qLogNEI and KG are BoTorch's own, set up for minimization;
``discrete_knowledge_gradient`` is the exact KG over a finite set (Frazier et al.,
2009). Add an acquisition by adding one entry to ``ACQUISITIONS``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
from compressbo.gp import incumbent, outcome_scale, search_bounds
from compressbo.gradients import DerivativeGP, ValueGradientPosterior
from compressbo.known_optimum import (
    CBM_BETA,
    MIN_VARIANCE,
    fit_transformed_gp,
    NegativeConfidenceBoundMinimization,
    NegativeExpectedRegret,
    validated_f_star,
)

UCB_BETA = CBM_BETA  # one confidence weight for UCB and CBM
CPI_RELATIVE_MARGIN = 0.01  # default CPI margin xi, in units of gp.outcome_scale (the outcome std)
EIGN_RELATIVE_WEIGHT = 0.1  # default lam: lam * E_prior||grad f||^2 = 0.1 prior std of f


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


def corrected_probability_of_improvement(m: Tensor, st: Tensor, xi: float = 0.0) -> Tensor:
    r"""``P(D > xi) = Phi((m - xi) / st)`` for ``D ~ N(m, st^2)``."""
    return Phi((m - xi) / st)


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
            raise UserInputError(f"the CPI margin xi must be >= 0, got {xi}")
        super().__init__(model, X_incumbent)
        self.xi = float(xi)

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate CPI.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of CPI values.
        """
        return corrected_probability_of_improvement(*self._improvement_moments(X), self.xi)


# ------------------------------- EI via gradient norms -------------------------------


@runtime_checkable
class JointPosteriorModel(Protocol):
    """A model of ``(f, grad f)`` itself, e.g. ``compressbo.gradient_gp.GradientGP``."""

    def joint_posterior(self, X: Tensor) -> ValueGradientPosterior:
        """The joint posterior at ``batch_shape x d`` points, in objective units."""

    def prior_gradient_scale(self) -> tuple[float, float]:
        """Prior ``(std of f, E||grad f||^2)`` in objective units."""


def gradient_norm_moments(
    joint: ValueGradientPosterior, lam: float
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of ``H = f + lam ||g||^2`` for jointly Gaussian ``(f, g)``.

    With ``(f, g) ~ N([mu, m], [[s^2, c^T], [c, S]])``, ``Var ||g||^2 = 2 tr(S^2) +
    4 m^T S m`` and ``Cov(f, ||g||^2) = 2 c^T m`` (odd central moments vanish).

    Args:
        joint: The posterior of ``(f(x), grad f(x))`` at ``batch_shape`` points.
        lam: The weight ``lam >= 0``, in units of ``f / |grad f|^2``.

    Returns:
        A tuple ``(mu_H, var_H)`` of ``batch_shape`` tensors:
        ``mu + lam (||m||^2 + tr S)`` and
        ``s^2 + 4 lam c^T m + lam^2 (2 tr(S^2) + 4 m^T S m)``.
    """
    m, S = joint.gradient_mean, joint.gradient_covariance
    Sm = (S @ m.unsqueeze(-1)).squeeze(-1)
    mean = joint.mean + lam * (m.pow(2).sum(-1) + S.diagonal(dim1=-2, dim2=-1).sum(-1))
    variance = (
        joint.variance
        + 4 * lam * (joint.cross_covariance * m).sum(-1)
        + lam**2 * (2 * S.pow(2).sum((-2, -1)) + 4 * (m * Sm).sum(-1))
    )
    return mean, variance


class ExpectedImprovementGradientNorm(AnalyticAcquisitionFunction):
    r"""EI via gradient norms: ``EI_GN(x) = s_H h((H+ - mu_H) / s_H)``, minimization.

    ``H(x) = f(x) + lam ||grad f(x)||^2`` rewards points that are both good and near
    first-order stationarity; ``(mu_H, s_H^2)`` are its exact posterior moments
    (``gradient_norm_moments``), used as a Gaussian. With ``lam = 0`` it is exactly
    BoTorch's ``ExpectedImprovement(best_f=mu+, maximize=False)``.

    The joint posterior of ``(f, grad f)`` is the derivative of a value GP
    (``DerivativeGP``), or, when ``model`` is a ``JointPosteriorModel`` (a GP that
    observed gradients), that model's own ``joint_posterior``.

    Example:
        >>> eign = ExpectedImprovementGradientNorm(model, train_X, lam=0.01)
        >>> values = eign(test_X)  # test_X: b x 1 x d -> b
    """

    def __init__(
        self, model: Model | JointPosteriorModel, X_observed: Tensor, lam: float
    ) -> None:
        r"""Set up EI-GN with the incumbent ``H+ = min_i mu_H(x_i)``.

        Args:
            model: A fitted value GP (``compressbo.gp.fit_gp``) or a gradient-enhanced
                GP (``compressbo.gradient_gp.fit_gradient_gp``).
            X_observed: A ``n x d`` tensor of observed inputs.
            lam: The weight ``lam >= 0`` of the squared gradient norm.
        """
        super().__init__(model=model)
        gradient_enhanced = isinstance(model, JointPosteriorModel)
        self.derivative = model if gradient_enhanced else DerivativeGP(model)
        self.joint_posterior = (
            model.joint_posterior if gradient_enhanced else self.derivative.posterior
        )
        self.lam = float(lam)
        with torch.no_grad():
            joint = self.joint_posterior(X_observed)
            mean = (
                joint.mean
                if gradient_enhanced
                else model.posterior(X_observed).mean.reshape(-1)  # as EI's mu+ exactly
            )
            mean_H = mean + (gradient_norm_moments(joint, self.lam)[0] - joint.mean)
        self.register_buffer("best_H", mean_H.min())

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(mu_H, s_H^2)`` at ``batch_shape x 1 x d`` inputs, each ``batch_shape``."""
        return gradient_norm_moments(self.joint_posterior(X.squeeze(-2)), self.lam)

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        r"""Evaluate EI-GN.

        Args:
            X: A ``batch_shape x 1 x d`` tensor of candidates.

        Returns:
            A ``batch_shape`` tensor of EI-GN values.
        """
        mean, variance = self.moments(X)
        sigma = variance.clamp_min(MIN_VARIANCE).sqrt()
        return sigma * _ei_helper(-((mean - self.best_H) / sigma))


# ------------------------------ discrete knowledge gradient ------------------------------


def discrete_knowledge_gradient(a: Tensor, b: Tensor) -> Tensor:
    r"""Exact ``min_i a_i - E[min_i (a_i + b_i Z)]``, ``Z ~ N(0, 1)`` (minimization).

    The knowledge gradient over a finite set ``A`` (Frazier, Powell & Dayanik, 2009):
    after one observation at ``x`` the posterior means on ``A`` move along the lines
    ``a_i + b_i Z`` with ``a = mu_n(A)`` and ``b = k_n(A, x) / sqrt(s^2(x) + tau^2)``.
    The lower envelope of the lines (upper envelope of ``-a - b Z``) with breakpoints
    ``c_j`` gives ``KG = sum_j (b_(j) - b_(j+1)) h(-|c_j|)`` over consecutive envelope
    lines, ``h(z) = phi(z) + z Phi(z)``; every term is ``>= 0``.

    Args:
        a: A ``k`` tensor of current posterior means on ``A``.
        b: A ``k`` tensor of their sensitivities to the standardized observation.

    Returns:
        A scalar tensor, the knowledge gradient ``>= 0``.
    """
    slopes, order = torch.sort(-b.detach(), stable=True)  # maximize -a - b Z
    intercepts = -a.detach()[order]
    lines: list[int] = []  # envelope, increasing slope
    cuts: list[float] = []  # cuts[j]: where lines[j + 1] overtakes lines[j]
    for i in range(len(slopes)):
        if lines and slopes[i] == slopes[lines[-1]]:
            if intercepts[i] <= intercepts[lines[-1]]:
                continue
            lines.pop()
            if cuts:
                cuts.pop()
        while lines:
            j = lines[-1]
            cut = ((intercepts[j] - intercepts[i]) / (slopes[i] - slopes[j])).item()
            if cuts and cut <= cuts[-1]:
                lines.pop()
                cuts.pop()
                continue
            cuts.append(cut)
            break
        lines.append(i)
    if not cuts:
        return a.new_zeros(())
    gaps = slopes[lines[1:]] - slopes[lines[:-1]]
    c = torch.tensor(cuts, dtype=a.dtype)
    return (gaps * _ei_helper(-c.abs())).sum()


def discrete_knowledge_gradient_at(
    model: Model, X_discrete: Tensor, x: Tensor, noise_variance: float
) -> Tensor:
    r"""The exact KG of observing ``x`` (noise ``tau^2``) over ``A = X_discrete + {x}``.

    Args:
        model: A fitted single-outcome GP.
        X_discrete: A ``k x d`` tensor, the finite set the minimum is taken over.
        x: A ``d`` tensor, the point to observe.
        noise_variance: ``tau^2``, the variance of the observation at ``x``.

    Returns:
        A scalar tensor, ``min_A mu_n - E[min_A mu_{n+1}]``.
    """
    A = torch.cat([X_discrete, x.reshape(1, -1)])
    with torch.no_grad():
        posterior = model.posterior(A)
        covariance = posterior.distribution.covariance_matrix
    a = posterior.mean.reshape(-1)
    b = covariance[:, -1] / (covariance[-1, -1] + noise_variance).sqrt()
    return discrete_knowledge_gradient(a, b)


# ------------------------------------ the registry ------------------------------------


@dataclass(frozen=True)
class AcquisitionSpec:
    """One registered acquisition.

    Attributes:
        build: ``build(model, X_observed, **options) -> AcquisitionFunction``, or None
            for a model-free proposal rule (``random``).
        log: Its values are logarithms (``kappa`` is compared on the log scale).
        monte_carlo: It accepts ``X_pending`` (pending points are joint MC samples);
            otherwise pending points are handled by conditioning the model.
        known_optimum: It needs the option ``f_star``, the known optimum value.
        gradient_enhanced: It also accepts a ``JointPosteriorModel`` (a GP that
            observed gradients) in place of the value GP.
        vanishes_when_done: Its maximized value tends to 0 as the search converges (an
            expected improvement or value of information), so stopping once it falls
            below ``kappa`` is meaningful. Not so for UCB (a negated bound), PI (at least
            about 1/2 near the incumbent), ERM, CBM and random.
    """

    build: Callable[..., AcquisitionFunction] | None
    log: bool = False
    monte_carlo: bool = False
    known_optimum: bool = False
    gradient_enhanced: bool = False
    vanishes_when_done: bool = True

    @property
    def model_free(self) -> bool:
        """Proposals are scrambled Sobol points; no GP is fitted for them."""
        return self.build is None


def _best_mean(model: Model, X_observed: Tensor) -> Tensor:
    """``mu+``: the lowest posterior mean among the observed points."""
    with torch.no_grad():
        return model.posterior(X_observed).mean.min()


def _negate(model: Model) -> ScalarizedPosteriorTransform:
    """Posterior transform turning BoTorch's maximizing MC acquisitions to minimization."""
    weights = torch.tensor([-1.0], dtype=model.train_targets.dtype)
    return ScalarizedPosteriorTransform(weights=weights)


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


def _cpi(model: Model, X_observed: Tensor, xi: float | None = None) -> AcquisitionFunction:
    if xi is None:
        xi = CPI_RELATIVE_MARGIN * outcome_scale(model)
    return CorrectedProbabilityOfImprovement(model, incumbent(model, X_observed), xi=xi)


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
    bounds = search_bounds(model) if bounds is None else bounds
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


def _eign(
    model: Model | JointPosteriorModel, X_observed: Tensor, lam: float | None = None
) -> AcquisitionFunction:
    """EI-GN; ``lam=None`` calibrates ``lam`` on the GP prior (``EIGN_RELATIVE_WEIGHT``)."""
    if lam is None:
        source = model if isinstance(model, JointPosteriorModel) else DerivativeGP(model)
        prior_std, prior_sq_gradient = source.prior_gradient_scale()
        lam = EIGN_RELATIVE_WEIGHT * prior_std / prior_sq_gradient
    if not (isinstance(lam, (int, float)) and lam >= 0 and lam < float("inf")):
        raise UserInputError(f"eign's lam must be a finite number >= 0, got {lam!r}.")
    return ExpectedImprovementGradientNorm(model, X_observed, lam)


def _erm(model: Model, X_observed: Tensor, f_star: float | None = None) -> AcquisitionFunction:
    f_star = validated_f_star("erm", f_star)
    return NegativeExpectedRegret(fit_transformed_gp(model, f_star), f_star)


def _cbm(
    model: Model, X_observed: Tensor, f_star: float | None = None, beta: float = CBM_BETA
) -> AcquisitionFunction:
    f_star = validated_f_star("cbm", f_star)
    return NegativeConfidenceBoundMinimization(
        fit_transformed_gp(model, f_star), f_star, beta=beta
    )


ACQUISITIONS: dict[str, AcquisitionSpec] = {
    "ei": AcquisitionSpec(_ei),
    "logei": AcquisitionSpec(_logei, log=True),
    "cei": AcquisitionSpec(_corrected(CorrectedExpectedImprovement)),
    "logcei": AcquisitionSpec(_corrected(LogCorrectedExpectedImprovement), log=True),
    "pi": AcquisitionSpec(_pi, vanishes_when_done=False),
    "cpi": AcquisitionSpec(_cpi),
    "ucb": AcquisitionSpec(_ucb, vanishes_when_done=False),
    "nei": AcquisitionSpec(_nei),
    "qlognei": AcquisitionSpec(_qlognei, log=True, monte_carlo=True),
    "kg": AcquisitionSpec(_kg, monte_carlo=True),
    "eign": AcquisitionSpec(_eign, gradient_enhanced=True),
    "erm": AcquisitionSpec(_erm, known_optimum=True, vanishes_when_done=False),
    "cbm": AcquisitionSpec(_cbm, known_optimum=True, vanishes_when_done=False),
    "random": AcquisitionSpec(None, vanishes_when_done=False),
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


def validate_options(name: str, options: dict[str, object]) -> None:
    """Fail early (before any evaluation) when ``name`` lacks a required option.

    Raises:
        UserInputError: ``name`` is unknown, or needs ``f_star`` and it is missing or
            not a finite number.
    """
    if acquisition_spec(name).known_optimum:
        validated_f_star(name, options.get("f_star"))


def make_acquisition(
    name: str, model: Model, X_observed: Tensor, **options: object
) -> AcquisitionFunction:
    r"""Build a minimization acquisition function by name.

    Args:
        name: One of ``ACQUISITION_NAMES``.
        model: A fitted single-outcome GP (as returned by ``fit_gp``); for
            acquisitions with a ``gradient_enhanced`` spec (eign) also a
            gradient-enhanced GP (``compressbo.gradient_gp.fit_gradient_gp``).
        X_observed: A ``n x d`` tensor of observed inputs; the incumbent (or the
            baseline of NEI / qLogNEI) is taken among them.
        **options: Acquisition-specific options: ``beta`` (ucb, cbm),
            ``num_fantasies`` (nei, kg), ``X_pending`` (Monte Carlo acquisitions only),
            ``bounds`` (kg; defaults to the box of the model's ``Normalize``
            transform), ``lam`` (eign; default: ``lam E_prior||grad f||^2`` equals
            ``EIGN_RELATIVE_WEIGHT`` times the prior std of ``f``, which is invariant
            to rescaling ``f`` or the inputs), ``f_star`` (erm, cbm: required), ``xi``
            (cpi: improvement margin; default ``CPI_RELATIVE_MARGIN`` times the outcome std).

    Returns:
        A BoTorch ``AcquisitionFunction``: input ``b x 1 x d`` (``b x (1 +
        num_fantasies) x d`` for kg), larger is better.

    Raises:
        UserInputError: ``name`` is unknown (the message lists the valid names), an
            option does not apply to ``name``, a required option (``f_star``) is
            missing, ``name`` is ``random`` (no acquisition function: use
            ``Optimizer(acquisition="random")``), or ``model`` is a gradient-enhanced
            GP and ``name`` cannot use one.
    """
    spec = acquisition_spec(name)
    if spec.build is None:
        raise UserInputError(
            f"acquisition {name!r} proposes scrambled Sobol points without a model; "
            f"use Optimizer(acquisition={name!r}) instead of make_acquisition."
        )
    if isinstance(model, JointPosteriorModel) and not spec.gradient_enhanced:
        gradient_names = [n for n, s in ACQUISITIONS.items() if s.gradient_enhanced]
        raise UserInputError(
            f"acquisition {name!r} needs a value GP (compressbo.gp.fit_gp), not a "
            f"gradient-enhanced GP; only {', '.join(gradient_names)} can use gradients."
        )
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
