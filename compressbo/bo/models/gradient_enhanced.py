r"""A gradient-enhanced GP: values and gradients observed together (GPyTorch).

When the objective's gradient is observed (synthetic problems, by autograd), the
joint posterior of ``(f(x), grad f(x))`` conditions on both. The GP is GPyTorch's
``ExactGP`` with ``ConstantMeanGrad`` and ``ScaleKernel(RBFKernelGrad)`` (or
``Matern52KernelGrad``), whose outputs at each point are ``(f, df/dz_1..d)``
interleaved, so ``n`` points give ``n (d + 1)`` correlated observations.

Units. The GP works on normalized inputs ``z = (x - lower) / w`` (``w = upper - lower``)
and standardized outcomes ``f_s = (f - mean_y) / std_y``. By the chain rule the
standardized gradient is ``df_s/dz_j = (w_j / std_y) df/dx_j``: values and gradients
share ``std_y`` (the value's mean shift does not touch gradients) and each gradient
component also carries its box width. Noise variances follow: ``tau^2 / std_y^2`` for
values and ``(w_j / std_y)^2 tau_g^2`` for gradients. ``joint_posterior`` undoes all
of it, so its moments are in the objective's units.

Noise. The value noise is the known per-point (heteroscedastic) variance, as in
``compressbo.bo.models.gp.fit_gp``; the gradient noise variance ``grad_var`` is given (one
number, in the objective's gradient units) or 0 for exact (autograd) gradients. Both
are floored at ``VARIANCE_FLOOR`` in standardized units, which keeps the
``n (d + 1)`` kernel matrix positive definite. The noise is fixed (nothing learned)
through ``InterleavedFixedNoiseLikelihood``; hyperparameters (constant mean,
outputscale, ARD lengthscales with BoTorch's dimension-scaled ``LogNormal`` prior) are
fitted by BoTorch's ``fit_gpytorch_mll`` (L-BFGS-B on GPyTorch's
``ExactMarginalLogLikelihood``, given the plain GPyTorch loss closure because BoTorch's
default one expects a BoTorch model's input transforms). A failed fit keeps the default
hyperparameters and emits a ``GPFitWarning``, as ``compressbo.bo.models.gp.fit_gp`` does.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models.utils.gpytorch_modules import SQRT2, SQRT3
from botorch.optim.closures import ForwardBackwardClosure
from botorch.optim.utils import get_parameters
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultitaskMultivariateNormal
from gpytorch.kernels import Matern52KernelGrad, RBFKernelGrad, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood
from gpytorch.means import ConstantMeanGrad
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.models import ExactGP
from gpytorch.priors import LogNormalPrior
from linear_operator.operators import DiagLinearOperator
from torch import Tensor

from compressbo.exceptions import OptimizerInputError
from compressbo.bo.models.gp import (
    BELIEVER_VARIANCE,
    DEFAULT_KERNEL,
    FIT_ERRORS,
    VARIANCE_FLOOR,
    GPFitWarning,
    outcome_variance,
    validated_training_data,
)
from compressbo.bo.models.derivative import ValueGradientPosterior

KERNELS = {"rbf": RBFKernelGrad, "matern52": Matern52KernelGrad}
_CURVATURE = {"rbf": 1.0, "matern52": 5.0 / 3.0}  # -rho''(0) of the correlation function


class InterleavedFixedNoiseLikelihood(FixedNoiseGaussianLikelihood):
    r"""Known noise on interleaved multi-output observations (nothing is learned).

    GPyTorch's ``FixedNoiseGaussianLikelihood`` matches its noise to the last
    dimension of the mean; a multitask mean is ``n x t`` while its covariance is the
    interleaved ``n t x n t`` matrix, so the ``n x t`` noise is stored flattened row by
    row (the interleaved order) and matched to ``n t``.
    """

    def __init__(self, noise: Tensor) -> None:
        r"""Fix the noise of the training observations.

        Args:
            noise: A ``n x t`` tensor of noise variances, one per observation and output.
        """
        super().__init__(noise=noise.reshape(-1), learn_additional_noise=False)

    def _shaped_noise_covar(
        self, base_shape: torch.Size, *params: Any, **kwargs: Any
    ) -> DiagLinearOperator:
        # GPyTorch would infer the shape from ``params`` (the n x d training inputs) and
        # silently drop a noise that does not match; the observations are n x t.
        noise = self.noise_covar.noise
        if base_shape[-2] * base_shape[-1] != noise.shape[-1]:
            raise RuntimeError(
                f"the fixed noise covers {noise.shape[-1]} observations, not the "
                f"{base_shape[-2]} x {base_shape[-1]} asked for; it applies to the "
                "training data only (use the latent posterior elsewhere)."
            )
        return DiagLinearOperator(noise)


class GradientGP(ExactGP):
    r"""Exact GP on values and gradients, with the joint posterior in objective units.

    Use ``fit_gradient_gp`` to build and fit one.

    Example:
        >>> model = fit_gradient_gp(X, Y, dY, Yvar, bounds)
        >>> joint = model.joint_posterior(test_X)  # test_X: b x d
        >>> joint.gradient_mean.shape
        torch.Size([b, d])
    """

    num_outputs = 1  # one objective; its gradient is part of the model, not an outcome

    def __init__(
        self,
        train_Z: Tensor,
        train_targets: Tensor,
        noise: Tensor,
        bounds: Tensor,
        y_mean: Tensor,
        y_std: Tensor,
        kernel: str = DEFAULT_KERNEL,
    ) -> None:
        r"""Set up the GP in normalized, standardized units (see the module docstring).

        Args:
            train_Z: A ``n x d`` tensor of inputs normalized to the unit cube.
            train_targets: A ``n x (d + 1)`` tensor, standardized ``(f_s, grad_z f_s)``.
            noise: A ``n x (d + 1)`` tensor of their noise variances.
            bounds: The ``2 x d`` box ``z`` is normalized to.
            y_mean: A scalar tensor, the value shift of the standardization.
            y_std: A scalar tensor, its scale.
            kernel: ``"rbf"`` or ``"matern52"``.
        """
        super().__init__(train_Z, train_targets, InterleavedFixedNoiseLikelihood(noise))
        d = train_Z.shape[-1]
        prior = LogNormalPrior(loc=SQRT2 + 0.5 * math.log(d), scale=SQRT3)
        base = KERNELS[kernel](
            ard_num_dims=d,
            lengthscale_prior=prior,
            lengthscale_constraint=GreaterThan(
                2.5e-2, transform=None, initial_value=prior.mode
            ),
        )
        self.mean_module = ConstantMeanGrad()
        self.covar_module = ScaleKernel(base)
        self.kernel = kernel
        self.register_buffer("bounds", bounds)
        self.register_buffer("y_mean", y_mean)
        self.register_buffer("y_std", y_std)
        self.to(train_Z)

    def forward(self, z: Tensor) -> MultitaskMultivariateNormal:
        r"""The prior of ``(f_s, grad_z f_s)`` at ``batch_shape x n x d`` inputs."""
        return MultitaskMultivariateNormal(self.mean_module(z), self.covar_module(z))

    @property
    def widths(self) -> Tensor:
        """``d`` box widths ``w``: ``dz / dx = 1 / w``."""
        return self.bounds[1] - self.bounds[0]

    def value_mean(self, X: Tensor) -> Tensor:
        r"""The posterior mean of ``f`` at ``n x d`` points (``n``): ``joint_posterior(X).mean``."""
        return self.joint_posterior(X).mean

    def joint_posterior(self, X: Tensor) -> ValueGradientPosterior:
        r"""The latent joint posterior of ``(f(x), grad f(x))``, differentiable in ``X``.

        Args:
            X: A ``batch_shape x d`` tensor of points in the objective's units.

        Returns:
            The ``ValueGradientPosterior`` at ``X``, in the objective's units.
        """
        z = (X - self.bounds[0]) / self.widths
        posterior = self(z.unsqueeze(-2))  # one point per batch: a (d + 1)^2 covariance
        mean = posterior.mean.squeeze(-2)  # batch x (d + 1)
        covariance = posterior.covariance_matrix  # batch x (d + 1) x (d + 1)
        scale = self.y_std / torch.cat([self.widths.new_ones(1), self.widths])
        mean = mean * scale
        covariance = covariance * scale.unsqueeze(-1) * scale
        return ValueGradientPosterior(
            mean=self.y_mean + mean[..., 0],
            variance=covariance[..., 0, 0],
            gradient_mean=mean[..., 1:],
            cross_covariance=covariance[..., 0, 1:],
            gradient_covariance=covariance[..., 1:, 1:],
        )

    def prior_gradient_scale(self) -> tuple[float, float]:
        r"""Prior scales in objective units: ``(std of f, E||grad f||^2)``.

        Returns:
            ``std_y sigma`` and ``std_y^2 sigma^2 (-rho''(0)) sum_j (l_j w_j)^-2``, the
            same quantities as ``DerivativeGP.prior_gradient_scale``.
        """
        variance = (self.y_std**2 * self.covar_module.outputscale).item()
        lengthscale = self.covar_module.base_kernel.lengthscale.reshape(-1)
        inverse_sq = ((lengthscale * self.widths) ** -2).sum().item()
        return math.sqrt(variance), variance * _CURVATURE[self.kernel] * inverse_sq

    def condition_on_pending(self, X_pending: Tensor) -> GradientGP:
        r"""Kriging believer: add the posterior mean at pending points as observations.

        Values and gradients at ``X_pending`` are believed at the current posterior
        mean with the small noise ``BELIEVER_VARIANCE`` (standardized units);
        hyperparameters and the standardization are kept.

        Args:
            X_pending: A ``k x d`` tensor of points asked but not yet told.

        Returns:
            A new ``GradientGP`` in eval mode (``self`` when ``k == 0``).
        """
        if X_pending.shape[0] == 0:
            return self
        Z_pending = (X_pending - self.bounds[0]) / self.widths
        with torch.no_grad():
            believed = self(Z_pending).mean
        model = GradientGP(
            torch.cat([self.train_inputs[0], Z_pending]),
            torch.cat([self.train_targets, believed]),
            torch.cat(
                [
                    self.likelihood.noise.reshape(self.train_targets.shape),
                    torch.full_like(believed, BELIEVER_VARIANCE),
                ]
            ),
            self.bounds,
            self.y_mean,
            self.y_std,
            self.kernel,
        )
        model.mean_module.load_state_dict(self.mean_module.state_dict())
        model.covar_module.load_state_dict(self.covar_module.state_dict())
        return model.eval()


def fit_gradient_gp(
    X: Tensor,
    Y: Tensor,
    dY: Tensor,
    Yvar: Tensor,
    bounds: Tensor,
    grad_var: float | None = None,
    kernel: str = DEFAULT_KERNEL,
) -> GradientGP:
    r"""Fit a gradient-enhanced GP to noisy values and their gradients.

    Args:
        X: A ``n x d`` tensor of inputs inside ``bounds``.
        Y: A ``n`` tensor of observed values.
        dY: A ``n x d`` tensor of observed gradients ``df/dx`` at ``X``.
        Yvar: A ``n`` tensor of the values' noise variances, ``>= 0``.
        bounds: A ``2 x d`` box.
        grad_var: The noise variance of each gradient component (objective units), or
            None for exact gradients; either way floored at ``VARIANCE_FLOOR`` in
            standardized units.
        kernel: ``"rbf"`` (``RBFKernelGrad``) or ``"matern52"`` (``Matern52KernelGrad``).

    Returns:
        A fitted float64 ``GradientGP`` in eval mode.

    Raises:
        UserInputError: Shapes disagree, values are not finite, a variance is
            negative, the bounds are not a box or ``kernel`` is unknown.
    """
    X, Y, Yvar, bounds = validated_training_data(X, Y, Yvar, bounds)
    dY = torch.as_tensor(dY, dtype=torch.float64)
    if dY.shape != X.shape:
        raise OptimizerInputError(
            f"dY must be a {tuple(X.shape)} tensor (one gradient per row of X), got "
            f"shape {tuple(dY.shape)}."
        )
    if not bool(torch.isfinite(dY).all()):
        raise OptimizerInputError("dY contains NaN or infinite values; drop those points.")
    if grad_var is not None and not (math.isfinite(grad_var) and grad_var >= 0):
        raise OptimizerInputError(f"grad_var must be a finite variance >= 0, got {grad_var!r}.")
    if kernel not in KERNELS:
        raise OptimizerInputError(
            f"unknown kernel {kernel!r}; choose one of: {', '.join(KERNELS)}."
        )
    widths = bounds[1] - bounds[0]
    y_mean = Y.mean() if Y.shape[0] > 1 else Y.new_zeros(())
    y_std = torch.tensor(outcome_variance(Y), dtype=Y.dtype).sqrt()
    scale = widths / y_std  # d f_s / d z_j = (w_j / std_y) d f / d x_j
    targets = torch.cat([(Y - y_mean) / y_std, dY * scale], dim=-1)
    gradient_noise = (0.0 if grad_var is None else grad_var) * scale.pow(2).expand_as(dY)
    noise = torch.cat([Yvar / y_std**2, gradient_noise], dim=-1).clamp_min(VARIANCE_FLOOR)
    Z = (X - bounds[0]) / widths
    model = GradientGP(Z, targets, noise, bounds, y_mean, y_std, kernel)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    closure = ForwardBackwardClosure(
        forward=lambda: -mll(model(*model.train_inputs), model.train_targets),
        parameters=get_parameters(mll, requires_grad=True),
    )  # BoTorch's default closure expects a BoTorch Model's input transforms
    try:
        fit_gpytorch_mll(mll, closure=closure)
    except FIT_ERRORS as error:  # BoTorch rolls the parameters back to the defaults
        warnings.warn(
            f"gradient GP fit failed ({type(error).__name__}: {error}); using the default "
            "hyperparameters.",
            GPFitWarning,
            stacklevel=2,
        )
    return model.eval()
