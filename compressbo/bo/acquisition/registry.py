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
  (``compressbo.bo.models.derivative``) and ``H+ = min_i mu_H(x_i)``; ``lam = 0`` is EI. With
  observed gradients the joint posterior comes from a gradient-enhanced GP
  (``compressbo.bo.models.gradient_enhanced``, any ``JointPosteriorModel``) instead.
- ERM and CBM (Nguyen & Osborne, 2020) need the known optimum ``f_star`` and work on
  a transformed GP (``compressbo.bo.models.known_optimum``); they return the negated criterion.
- ``random``: scrambled Sobol points, no model (``compressbo.bo.optimizer.Optimizer``
  draws them; there is no acquisition function to build).

EI, LogEI, PI, UCB, NEI, qLogNEI and KG are BoTorch's own, set up for minimization;
``discrete_knowledge_gradient`` is the exact KG over a finite set (Frazier et al.,
2009). Add an acquisition by adding one entry to ``ACQUISITIONS``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import (
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
from torch import Tensor

from compressbo.exceptions import OptimizerInputError
from compressbo.bo.models.gp import incumbent, outcome_scale, search_bounds
from compressbo.bo.models.derivative import joint_model
from compressbo.bo.models.known_optimum import CBM_BETA, fit_transformed_gp
from compressbo.bo.acquisition.known_optimum import NegativeConfidenceBoundMinimization, NegativeExpectedRegret, validated_f_star
from compressbo.bo.acquisition.corrected import CorrectedExpectedImprovement, CorrectedProbabilityOfImprovement, LogCorrectedExpectedImprovement, _CorrectedImprovement
from compressbo.bo.acquisition.gradient_norm import ExpectedImprovementGradientNorm, JointPosteriorModel


UCB_BETA = CBM_BETA  # one confidence weight for UCB and CBM
CPI_RELATIVE_MARGIN = 0.01  # default CPI margin xi, in units of gp.outcome_scale (the outcome std)
EIGN_RELATIVE_WEIGHT = 0.1  # default lam: lam * E_prior||grad f||^2 = 0.1 prior std of f


# ------------------------------------ the registry ------------------------------------


@dataclass(frozen=True)
class AcquisitionSpec:
    """One registered acquisition.

    Attributes:
        build: ``build(model, X_observed, **options) -> AcquisitionFunction``, or None
            for a model-free proposal rule (``random``).
        label: Its display name in plots and reports (``"LogCEI"``).
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
        composite: It works on any model with a Gaussian posterior, such as the composite
            surrogate ``compressbo.bo.models.composite.CompositeModel`` (not so for NEI
            and KG, which fantasize a GP, EI-GN, which differentiates one, and ERM / CBM,
            which refit one).
    """

    build: Callable[..., AcquisitionFunction] | None
    label: str = ""
    log: bool = False
    monte_carlo: bool = False
    known_optimum: bool = False
    gradient_enhanced: bool = False
    vanishes_when_done: bool = True
    composite: bool = True

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
    weights = torch.tensor([-1.0], dtype=torch.float64)  # every model of the engine is float64
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
        prior_std, prior_sq_gradient = joint_model(model).prior_gradient_scale()
        lam = EIGN_RELATIVE_WEIGHT * prior_std / prior_sq_gradient
    if not (isinstance(lam, (int, float)) and lam >= 0 and lam < float("inf")):
        raise OptimizerInputError(f"eign's lam must be a finite number >= 0, got {lam!r}.")
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
    "ei": AcquisitionSpec(_ei, "EI"),
    "logei": AcquisitionSpec(_logei, "LogEI", log=True),
    "cei": AcquisitionSpec(_corrected(CorrectedExpectedImprovement), "CEI"),
    "logcei": AcquisitionSpec(_corrected(LogCorrectedExpectedImprovement), "LogCEI", log=True),
    "pi": AcquisitionSpec(_pi, "PI", vanishes_when_done=False),
    "cpi": AcquisitionSpec(_cpi, "CPI"),
    "ucb": AcquisitionSpec(_ucb, "UCB", vanishes_when_done=False),
    "nei": AcquisitionSpec(_nei, "NEI", composite=False),
    "qlognei": AcquisitionSpec(_qlognei, "qLogNEI", log=True, monte_carlo=True),
    "kg": AcquisitionSpec(_kg, "KG", monte_carlo=True, composite=False),
    "eign": AcquisitionSpec(_eign, "EI-GN", gradient_enhanced=True, composite=False),
    "erm": AcquisitionSpec(_erm, "ERM", known_optimum=True, vanishes_when_done=False, composite=False),
    "cbm": AcquisitionSpec(_cbm, "CBM", known_optimum=True, vanishes_when_done=False, composite=False),
    "random": AcquisitionSpec(None, "Random", vanishes_when_done=False),
}
ACQUISITION_NAMES: tuple[str, ...] = tuple(ACQUISITIONS)


def acquisition_label(name: str) -> str:
    """The display name of a registered acquisition (``"LogCEI"``); unknown names as given."""
    spec = ACQUISITIONS.get(name)
    return spec.label if spec is not None and spec.label else name


def acquisition_spec(name: str) -> AcquisitionSpec:
    """The registry entry of ``name``; ``UserInputError`` listing valid names if unknown."""
    try:
        return ACQUISITIONS[name]
    except (KeyError, TypeError):
        raise OptimizerInputError(
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
            gradient-enhanced GP (``compressbo.bo.models.gradient_enhanced.fit_gradient_gp``).
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
        raise OptimizerInputError(
            f"acquisition {name!r} proposes scrambled Sobol points without a model; "
            f"use Optimizer(acquisition={name!r}) instead of make_acquisition."
        )
    if isinstance(model, JointPosteriorModel) and not spec.gradient_enhanced:
        gradient_names = [n for n, s in ACQUISITIONS.items() if s.gradient_enhanced]
        raise OptimizerInputError(
            f"acquisition {name!r} needs a value GP (compressbo.bo.models.gp.fit_gp), not a "
            f"gradient-enhanced GP; only {', '.join(gradient_names)} can use gradients."
        )
    try:
        return spec.build(model, X_observed, **options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        hint = (
            "; analytic acquisitions take pending points through the model "
            "(compressbo.bo.models.gp.condition_on_pending)"
            if "X_pending" in options
            else ""
        )
        raise OptimizerInputError(
            f"acquisition {name!r} does not accept the option(s) {sorted(options)}"
            f"{hint}."
        ) from None
