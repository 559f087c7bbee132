"""The fixed-noise Gaussian process of the BO engine, and incumbent selection.

Observations ``y_i = f(x_i) + eps_i`` come with a known, per-point noise variance
``tau_i^2`` (heteroscedastic). They are modelled by BoTorch's ``SingleTaskGP`` with
``train_Yvar`` (a ``FixedNoiseGaussianLikelihood``) in float64, inputs normalized to
the search box and outcomes standardized, fitted by maximum marginal likelihood with
``fit_gpytorch_mll``.

Robustness:

- Variances are floored at ``VARIANCE_FLOOR`` times the sample variance of ``Y``
  (``VARIANCE_FLOOR`` in the standardized units the GP works in), so observations given
  with zero variance (a caller's exact values; compressbo's own evaluator never reports
  0) and duplicate inputs keep the kernel matrix positive definite.
- A failed fit (``NotPSDError``, ``ModelFittingError``, a linear-algebra error) is
  retried once with the larger floor ``RETRY_VARIANCE_FLOOR``; if that fails too the
  GP keeps its default (prior-mode) hyperparameters. Both steps emit a
  ``GPFitWarning``; fitting never raises for numerical reasons.

Kernels (``KERNELS``, by name; the GP works on inputs normalized to ``[0, 1]^d``):

- ``"rbf"`` (default): BoTorch's current default, an ARD ``RBFKernel`` with the
  dimension-scaled log-normal lengthscale prior of Hvarfner et al. (2024), no
  outputscale (``botorch.models.utils.gpytorch_modules.get_covar_module_with_dim_scaled_prior``).
- ``"matern52"``: the kernel of the corrected-EI paper (Zhou, Ma & Blaschko, 2023) and of
  its authors' code, BoTorch's default before version 0.12: ``ScaleKernel(MaternKernel(nu=2.5,
  ard_num_dims=d, lengthscale_prior=GammaPrior(3.0, 6.0)), outputscale_prior=GammaPrior(2.0,
  0.15))``. Gamma(concentration, rate): the lengthscale prior has mean 0.5 and mode 1/3 (in
  the unit cube), the outputscale prior mean 13.3 and mode 6.7 (on standardized outcomes).
"""

from __future__ import annotations

import warnings

import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.means import ZeroMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from linear_operator.utils.errors import NotPSDError
from torch import Tensor

from compressbo.bo.models.warping import KnownScale, make_input_transform, validate_warp
from compressbo.exceptions import OptimizerInputError, SettingError

VARIANCE_FLOOR = 1e-5
RETRY_VARIANCE_FLOOR = 1e-3
BELIEVER_VARIANCE = VARIANCE_FLOOR  # standardized noise of kriging-believer observations
_MIN_STD = 1e-8  # Standardize's own threshold below which outcomes are not scaled
FIT_ERRORS = (NotPSDError, ModelFittingError, RuntimeError, ValueError)
# Priors of the "matern52" kernel: GammaPrior(concentration, rate), BoTorch < 0.12 defaults.
MATERN_LENGTHSCALE_PRIOR = (3.0, 6.0)
MATERN_OUTPUTSCALE_PRIOR = (2.0, 0.15)


def rbf_kernel(d: int) -> Kernel:
    """BoTorch's current default covariance: ARD RBF with dimension-scaled log-normal priors."""
    return get_covar_module_with_dim_scaled_prior(ard_num_dims=d)


def matern52_kernel(d: int) -> Kernel:
    """ARD Matern-5/2 in a ScaleKernel with Gamma priors (the corrected-EI paper's kernel)."""
    return ScaleKernel(
        MaternKernel(
            nu=2.5, ard_num_dims=d, lengthscale_prior=GammaPrior(*MATERN_LENGTHSCALE_PRIOR)
        ),
        outputscale_prior=GammaPrior(*MATERN_OUTPUTSCALE_PRIOR),
    )


KERNELS = {"rbf": rbf_kernel, "matern52": matern52_kernel}  # name -> builder(d)
KERNEL_NAMES = tuple(KERNELS)
DEFAULT_KERNEL = "rbf"


def check_kernel(kernel: str) -> str:
    """``kernel`` if it names one of ``KERNELS``, else a one-line ``SettingError``."""
    if kernel not in KERNELS:
        raise SettingError(
            f"unknown kernel {kernel!r}; choose one of {', '.join(KERNEL_NAMES)}", setting="kernel"
        )
    return kernel


def kernel_name(model: SingleTaskGP) -> str:
    """The ``KERNELS`` name of a fitted GP's covariance (``"matern52"`` or ``"rbf"``)."""
    covar = model.covar_module
    base = covar.base_kernel if isinstance(covar, ScaleKernel) else covar
    return "matern52" if isinstance(base, MaternKernel) and base.nu == 2.5 else "rbf"


class GPFitWarning(RuntimeWarning):
    """The GP fit failed and was recovered (larger variance floor or default fit)."""


def fit_gp(
    train_X: Tensor,
    train_Y: Tensor,
    train_Yvar: Tensor,
    bounds: Tensor,
    known_kernel: dict[str, float] | None = None,
    kernel: str = DEFAULT_KERNEL,
    warp: str = "none",
    known_scale: KnownScale | None = None,
) -> SingleTaskGP:
    r"""Fit a fixed-noise GP to noisy observations with known variances.

    Args:
        train_X: A ``n x d`` tensor of observed inputs inside ``bounds``.
        train_Y: A ``n`` or ``n x 1`` tensor of observed values.
        train_Yvar: Observation noise variances, same shape as ``train_Y``, ``>= 0``.
        bounds: A ``2 x d`` tensor of lower and upper bounds of the search box.
        known_kernel: ``{"lengthscale": l, "outputscale": s2}`` when the prior is known:
            ``f ~ GP(0, s2 exp(-||x - x'||^2 / (2 l^2)))`` in the objective's units. The
            GP then uses exactly that kernel (zero mean, no outcome transform, nothing
            fitted); see :func:`known_rbf_gp`.
        kernel: A name in ``KERNELS`` (``"rbf"`` or ``"matern52"``, see the module
            docstring); ignored with ``known_kernel``.
        warp: The scale the GP sees its inputs on, a name from
            ``compressbo.bo.models.warping.WARP_NAMES``: ``none`` (normalized to the box),
            ``log`` (log-scale, normalized to the box's log bounds) or ``learned``
            (Kumaraswamy warping fitted with the GP) or ``spectral`` (``known_scale``, then
            the learned warping). Only ``none`` with ``known_kernel``.
        known_scale: The problem's known scale of each coordinate
            (:class:`~compressbo.bo.models.warping.KnownScale`), for ``warp="spectral"``.

    Returns:
        A fitted float64 ``SingleTaskGP`` in eval mode, with the warping's input transform
        (for ``none`` a ``Normalize(d, bounds)``) and a ``Standardize(m=1)`` outcome transform (none with
        ``known_kernel``).

    Raises:
        UserInputError: Shapes disagree, values are not finite, a variance is negative
            or the bounds are not a ``2 x d`` box with ``lower < upper``.
        OptimizerInputError: ``kernel`` is not a name in ``KERNELS``.
    """
    check_kernel(kernel)
    X, Y, Yvar, bounds = validated_training_data(train_X, train_Y, train_Yvar, bounds)
    validate_warp(warp, bounds, known_scale)
    if known_kernel is not None:
        if warp != "none":
            raise SettingError(
                f"a known kernel is a prior on x itself; it takes warp 'none', not {warp!r}.",
                setting="warp",
            )
        return known_rbf_gp(X, Y, Yvar, bounds, **known_kernel)
    scale = outcome_variance(Y)
    for floor in (VARIANCE_FLOOR, RETRY_VARIANCE_FLOOR):
        model = _build_gp(X, Y, Yvar.clamp_min(floor * scale), bounds, kernel, warp, known_scale)
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            return model.eval()
        except FIT_ERRORS as error:
            warnings.warn(
                f"GP fit failed with variance floor {floor:g} ({type(error).__name__}: "
                f"{error}); recovering.",
                GPFitWarning,
                stacklevel=2,
            )
    warnings.warn(
        "GP fit failed twice; using the default hyperparameters.",
        GPFitWarning,
        stacklevel=2,
    )
    return _build_gp(X, Y, Yvar.clamp_min(RETRY_VARIANCE_FLOOR * scale), bounds, kernel, warp, known_scale).eval()


def known_rbf_gp(
    X: Tensor, Y: Tensor, Yvar: Tensor, bounds: Tensor, lengthscale: float, outputscale: float
) -> SingleTaskGP:
    r"""The exact GP posterior under a known squared-exponential prior (nothing is fitted).

    Args:
        X: A ``n x d`` tensor of inputs inside ``bounds``.
        Y: A ``n x 1`` tensor of observed values.
        Yvar: A ``n x 1`` tensor of noise variances (floored at ``VARIANCE_FLOOR *
            outputscale``).
        bounds: A ``2 x d`` box; inputs are normalized to it, so the kernel's
            lengthscale is ``lengthscale / (upper - lower)`` per dimension.
        lengthscale: Prior lengthscale ``l`` in input units.
        outputscale: Prior variance ``s2`` in objective units.

    Returns:
        A ``SingleTaskGP`` in eval mode with a zero mean and a fixed
        ``ScaleKernel(RBFKernel)``.
    """
    if not (lengthscale > 0 and outputscale > 0):
        raise OptimizerInputError(
            f"a known kernel needs lengthscale > 0 and outputscale > 0, got {lengthscale} "
            f"and {outputscale}."
        )
    d = X.shape[-1]
    kernel = ScaleKernel(RBFKernel(ard_num_dims=d)).to(X)
    kernel.base_kernel.lengthscale = lengthscale / (bounds[1] - bounds[0])
    kernel.outputscale = outputscale
    model = SingleTaskGP(
        train_X=X,
        train_Y=Y,
        train_Yvar=Yvar.clamp_min(VARIANCE_FLOOR * outputscale),
        covar_module=kernel,
        mean_module=ZeroMean(),
        outcome_transform=None,
        input_transform=Normalize(d=d, bounds=bounds),
    )
    model.requires_grad_(False)
    return model.eval()


def incumbent(model: SingleTaskGP, X_observed: Tensor) -> Tensor:
    r"""The observed point with the lowest posterior mean.

    Under noise the lowest noisy ``y_i`` is biased low; the posterior mean is not.

    Args:
        model: A fitted single-outcome model.
        X_observed: A ``n x d`` tensor of observed inputs, ``n >= 1``.

    Returns:
        A ``1 x d`` tensor, the row of ``X_observed`` with the lowest posterior mean.
    """
    if X_observed.dim() != 2 or X_observed.shape[0] == 0:
        raise OptimizerInputError(
            f"X_observed must be a non-empty n x d tensor, got shape "
            f"{tuple(X_observed.shape)}; pass the observed inputs."
        )
    with torch.no_grad():
        mean = model.posterior(X_observed).mean.reshape(-1)
    return X_observed[mean.argmin()].unsqueeze(0)


def condition_on_pending(
    model: SingleTaskGP, X_pending: Tensor, lie: float | None = None
) -> SingleTaskGP:
    r"""Condition the GP on believed observations at pending points.

    By default this is the kriging believer: the pending points are added as (almost)
    noise-free observations of the current posterior mean, which leaves the mean unchanged
    and collapses the variance there, so an improvement-based acquisition no longer rewards
    evaluating them again. With ``lie`` set it is the constant liar (Ginsbourger et al.,
    2010): every pending point is believed to return ``lie``. Acquisitions that reward a
    small variance as well as a low mean (CBM, ERM) need a pessimistic lie such as the
    largest observation, or they re-propose the pending points. Hyperparameters are kept.

    Args:
        model: A fitted ``SingleTaskGP`` (as returned by ``fit_gp`` or ``known_rbf_gp``).
        X_pending: A ``k x d`` tensor of points asked but not yet told.
        lie: The value every pending point is believed to return (objective units), or
            None for the posterior mean.

    Returns:
        A new ``SingleTaskGP`` conditioned on the ``k`` believed observations
        (``model`` itself when ``k == 0``).
    """
    if X_pending.shape[0] == 0:
        return model
    with torch.no_grad():
        believed_Y = model.posterior(X_pending).mean
    if lie is not None:
        believed_Y = torch.full_like(believed_Y, lie)
    # BoTorch takes this noise in the model's outcome units: standardized when the model
    # standardizes (then it is already relative), objective units otherwise.
    unit = 1.0 if getattr(model, "outcome_transform", None) is not None else outcome_scale(model) ** 2
    noise = torch.full_like(believed_Y, BELIEVER_VARIANCE * unit)
    return model.condition_on_observations(X=X_pending, Y=believed_Y, noise=noise)


def outcome_scale(model: SingleTaskGP) -> float:
    """The objective's scale under ``model``: the std its ``Standardize`` divides by, else
    the prior std ``sqrt(outputscale)`` of a ``ScaleKernel``, else 1; a model that knows
    its own (a composite surrogate) says so by ``model.outcome_scale()``."""
    if callable(getattr(model, "outcome_scale", None)):
        return float(model.outcome_scale())
    transform = getattr(model, "outcome_transform", None)
    if transform is not None and hasattr(transform, "stdvs"):
        return transform.stdvs.item()
    kernel = getattr(model, "covar_module", None)
    if isinstance(kernel, ScaleKernel):
        return kernel.outputscale.detach().sqrt().item()
    return 1.0


def training_data(model: SingleTaskGP) -> tuple[Tensor, Tensor, Tensor]:
    r"""The observations a fitted GP holds, back in the units of the objective.

    Undoes the ``Normalize`` input and ``Standardize`` outcome transforms, so a model
    conditioned on pending points (kriging believer) returns its believer observations
    too. Variances are the (floored) noise variances the GP uses.

    Args:
        model: A ``SingleTaskGP`` as returned by ``fit_gp`` or ``condition_on_pending``.

    Returns:
        A tuple ``(X, Y, Yvar)``: a ``n x d`` tensor of inputs and two ``n x 1``
        tensors of observed values and noise variances.
    """
    Z = model.train_inputs[0]
    X = model.input_transform.untransform(Z) if hasattr(model, "input_transform") else Z
    Y = model.train_targets.unsqueeze(-1)
    Yvar = model.likelihood.noise_covar.noise.reshape(Y.shape)
    if hasattr(model, "outcome_transform"):
        Y, Yvar = model.outcome_transform.untransform(Y, Yvar)
    return X.detach(), Y.detach(), Yvar.detach()


def search_bounds(model: SingleTaskGP) -> Tensor:
    """The ``2 x d`` search box of a model fitted by :func:`fit_gp` (its input transform's)."""
    transform = model.input_transform
    if hasattr(transform, "search_box"):  # every warping of compressbo.bo.models.warping
        return transform.search_box.detach().clone()
    lower = transform.offset.reshape(-1)
    return torch.stack([lower, lower + transform.coefficient.reshape(-1)]).detach()


def _build_gp(
    X: Tensor, Y: Tensor, Yvar: Tensor, bounds: Tensor, kernel: str, warp: str = "none",
    known_scale: KnownScale | None = None,
) -> SingleTaskGP:
    return SingleTaskGP(
        train_X=X,
        train_Y=Y,
        train_Yvar=Yvar,
        covar_module=KERNELS[kernel](X.shape[-1]),
        input_transform=make_input_transform(warp, bounds, known_scale),
        outcome_transform=Standardize(m=1),
    )


def outcome_variance(Y: Tensor) -> float:
    """The variance Standardize divides by (1 when ``Y`` is (nearly) constant)."""
    std = Y.std().item() if Y.shape[0] > 1 else 0.0
    return std**2 if std >= _MIN_STD else 1.0


def validated_training_data(
    X: Tensor, Y: Tensor, Yvar: Tensor, bounds: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float64 ``(X n x d, Y n x 1, Yvar n x 1, bounds 2 x d)``, or a one-line UserInputError."""
    X, Y, Yvar, bounds = (
        torch.as_tensor(t, dtype=torch.float64) for t in (X, Y, Yvar, bounds)
    )
    if X.dim() != 2 or X.shape[0] == 0:
        raise OptimizerInputError(
            f"train_X must be a non-empty n x d tensor, got shape {tuple(X.shape)}."
        )
    n, d = X.shape
    if bounds.shape != (2, d):
        raise OptimizerInputError(
            f"bounds must be a 2 x {d} tensor (lower row, upper row), got shape "
            f"{tuple(bounds.shape)}."
        )
    if not bool((bounds[0] < bounds[1]).all()):
        raise OptimizerInputError("bounds must satisfy lower < upper in every dimension.")
    Y, Yvar = Y.reshape(-1, 1) if Y.numel() == n else Y, Yvar.reshape(-1, 1)
    if Y.shape != (n, 1) or Yvar.shape != (n, 1):
        raise OptimizerInputError(
            f"train_Y and train_Yvar must have {n} values (one per row of train_X), "
            f"got shapes {tuple(Y.shape)} and {tuple(Yvar.shape)}."
        )
    for name, t in (("train_X", X), ("train_Y", Y), ("train_Yvar", Yvar)):
        if not bool(torch.isfinite(t).all()):
            raise OptimizerInputError(f"{name} contains NaN or infinite values; drop them.")
    if bool((Yvar < 0).any()):
        raise OptimizerInputError("train_Yvar must be >= 0 (noise variances).")
    return X, Y, Yvar, bounds
