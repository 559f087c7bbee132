r"""The joint posterior of a value and its gradient under a fitted value-only GP.

Differentiation is linear, so the gradient of a GP is a GP and ``(f(x), grad f(x))``
is jointly Gaussian under the posterior of ``compressbo.bo.models.gp.fit_gp``'s
``SingleTaskGP`` (Rasmussen & Williams, 2006, sec. 9.4). With the GP working on
normalized inputs ``z = (x - offset) / coefficient`` (``Normalize``) and
standardized outcomes ``f = mu_y + sigma_y f_s`` (``Standardize``), a stationary
kernel ``k(z, z') = sigma^2 rho(r)``, ``r = ||(z - z') / l||``, training inputs ``Z``,
``K = k(Z, Z) + diag(noise)`` and ``alpha = K^{-1} (y_s - c)`` (constant mean ``c``):

- ``J(z) = d k(z, Z) / dz = sigma^2 gamma(r) (z - Z) / l^2``, ``n x d``, with the
  smooth ``gamma(r) = rho'(r) / r``;
- ``E[grad_z f_s] = J^T alpha``, ``Cov(f_s, grad_z f_s) = -k(z, Z) K^{-1} J`` (the
  prior cross-covariance at ``z' = z`` is 0 for a stationary kernel) and
  ``Cov(grad_z f_s) = -gamma(0) sigma^2 diag(l^-2) - J^T K^{-1} J``;
- chain rule to the objective's units: gradients are divided by ``coefficient`` and
  multiplied by ``sigma_y`` (covariances by ``sigma_y^2`` and both coefficients).

``f``'s own mean and variance come from BoTorch's ``model.posterior``. Kernels:
GPyTorch's ``RBFKernel`` (``gamma = -exp(-r^2/2)``) and ``MaternKernel`` with
``nu = 1.5, 2.5`` (``-3 e^{-sqrt3 r}``, ``-(5/3)(1 + sqrt5 r) e^{-sqrt5 r}``),
optionally inside a ``ScaleKernel``; ``nu = 0.5`` paths are not differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from botorch.models import SingleTaskGP
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from torch import Tensor

from compressbo.exceptions import OptimizerInputError


@dataclass(frozen=True)
class ValueGradientPosterior:
    r"""Joint Gaussian posterior of ``(f(x), grad f(x))`` at a batch of points.

    Attributes:
        mean: ``batch_shape``, ``mu(x)``.
        variance: ``batch_shape``, ``s^2(x)``.
        gradient_mean: ``batch_shape x d``, ``m(x) = E[grad f(x)]``.
        cross_covariance: ``batch_shape x d``, ``c(x) = Cov(f(x), grad f(x))``.
        gradient_covariance: ``batch_shape x d x d``, ``S(x) = Cov(grad f(x))``.
    """

    mean: Tensor
    variance: Tensor
    gradient_mean: Tensor
    cross_covariance: Tensor
    gradient_covariance: Tensor


@runtime_checkable
class JointPosteriorModel(Protocol):
    """A model of ``(f, grad f)``: :class:`DerivativeGP` (of a value GP) or
    ``compressbo.bo.models.gradient_enhanced.GradientGP`` (a GP that observed gradients)."""

    def joint_posterior(self, X: Tensor) -> ValueGradientPosterior:
        """The joint posterior at ``batch_shape x d`` points, in objective units."""

    def value_mean(self, X: Tensor) -> Tensor:
        """The posterior mean of ``f`` at ``n x d`` points (``n``), as the value acquisitions compute it."""

    def prior_gradient_scale(self) -> tuple[float, float]:
        """Prior ``(std of f, E||grad f||^2)`` in objective units."""


def joint_model(model: SingleTaskGP | JointPosteriorModel) -> JointPosteriorModel:
    """``model`` itself if it models ``(f, grad f)``, else its :class:`DerivativeGP` (a value GP's)."""
    return model if isinstance(model, JointPosteriorModel) else DerivativeGP(model)


def _gamma(kernel: RBFKernel | MaternKernel, r2: Tensor) -> Tensor:
    """``rho'(r) / r`` of the kernel's correlation function, from ``r^2``."""
    if isinstance(kernel, RBFKernel):
        return -torch.exp(-0.5 * r2)
    r = r2.clamp_min(1e-30).sqrt()  # the clamp keeps the backward pass finite at r = 0
    if kernel.nu == 2.5:
        return -(5.0 / 3.0) * (1 + math.sqrt(5) * r) * torch.exp(-math.sqrt(5) * r)
    return -3.0 * torch.exp(-math.sqrt(3) * r)


class DerivativeGP:
    r"""The gradient posterior of a fitted value GP (no gradient observations needed).

    Example:
        >>> model = fit_gp(train_X, train_Y, train_Yvar, bounds)
        >>> joint = DerivativeGP(model).joint_posterior(test_X)  # test_X: b x d
        >>> joint.gradient_mean.shape
        torch.Size([b, d])
    """

    def __init__(self, model: SingleTaskGP) -> None:
        r"""Precompute the Cholesky factor and weights of the model's training data.

        Args:
            model: A single-outcome ``SingleTaskGP`` in eval mode with a ``Normalize``
                input transform and (optionally) a ``Standardize`` outcome transform,
                as returned by ``compressbo.bo.models.gp.fit_gp`` or ``condition_on_pending``.

        Raises:
            UserInputError: The kernel is not RBF or Matern with ``nu`` 1.5 / 2.5.
        """
        covar = model.covar_module
        base = covar.base_kernel if isinstance(covar, ScaleKernel) else covar
        if not isinstance(base, (RBFKernel, MaternKernel)) or (
            isinstance(base, MaternKernel) and base.nu not in (1.5, 2.5)
        ):
            raise OptimizerInputError(
                f"the gradient posterior needs an RBF or Matern-3/2 / 5/2 kernel, got "
                f"{type(base).__name__}; fit the GP with one of those."
            )
        self.model = model
        self._base = base
        with torch.no_grad():
            Z = model.train_inputs[0]
            outputscale = covar.outputscale if isinstance(covar, ScaleKernel) else 1.0
            self._outputscale = torch.as_tensor(outputscale, dtype=Z.dtype).reshape(())
            self._lengthscale = base.lengthscale.reshape(-1)
            noise = model.likelihood.noise_covar.noise.reshape(-1)
            K = covar(Z).to_dense() + torch.diag_embed(noise)
            self._cholesky = torch.linalg.cholesky(K)
            residual = model.train_targets - model.mean_module(Z)
            self._alpha = torch.cholesky_solve(residual.unsqueeze(-1), self._cholesky)
            transform = model.input_transform
            self._offset = transform.offset.reshape(-1)
            self._coefficient = transform.coefficient.reshape(-1)
            outcome = getattr(model, "outcome_transform", None)
            self._sigma_y = (
                outcome.stdvs.reshape(()) if outcome is not None else torch.ones(())
            ).to(Z)
        self._Z = Z

    def prior_gradient_scale(self) -> tuple[float, float]:
        r"""Prior scales in objective units: ``(std of f, E||grad f||^2)``.

        Returns:
            ``sigma_y sigma`` and ``sigma_y^2 sigma^2 (-gamma(0)) sum_j (l_j c_j)^-2``
            with ``c`` the ``Normalize`` coefficients.
        """
        variance = (self._sigma_y**2 * self._outputscale).item()
        curvature = -_gamma(self._base, torch.zeros((), dtype=self._Z.dtype)).item()
        inverse_sq = ((self._lengthscale * self._coefficient) ** -2).sum().item()
        return math.sqrt(variance), variance * curvature * inverse_sq

    def value_mean(self, X: Tensor) -> Tensor:
        r"""The value GP's posterior mean at ``n x d`` points ``X`` (``n``), BoTorch's ``model.posterior``."""
        return self.model.posterior(X).mean.reshape(-1)

    def joint_posterior(self, X: Tensor) -> ValueGradientPosterior:
        r"""The joint posterior of ``(f(x), grad f(x))``, differentiable in ``X``.

        Args:
            X: A ``batch_shape x d`` tensor of points in the objective's units.

        Returns:
            The ``ValueGradientPosterior`` at ``X`` (gradients in the objective's units).
        """
        value = self.model.posterior(X.unsqueeze(-2))
        z = (X - self._offset) / self._coefficient
        scaled = (z.unsqueeze(-2) - self._Z) / self._lengthscale  # batch x n x d
        r2 = scaled.pow(2).sum(-1)
        k = self.model.covar_module(z.unsqueeze(-2), self._Z).to_dense().squeeze(-2)
        J = (
            self._outputscale * _gamma(self._base, r2).unsqueeze(-1) * scaled
            / self._lengthscale
        )  # batch x n x d: d k(z, Z_i) / dz
        gradient_mean = (J * self._alpha.squeeze(-1).unsqueeze(-1)).sum(-2)
        weights = torch.cholesky_solve(k.unsqueeze(-1), self._cholesky).squeeze(-1)
        cross = -(weights.unsqueeze(-1) * J).sum(-2)
        V = torch.linalg.solve_triangular(self._cholesky, J, upper=False)
        prior = -_gamma(self._base, torch.zeros_like(r2[..., 0]))
        prior = prior[..., None, None] * torch.diag_embed(
            (self._outputscale / self._lengthscale**2).expand(*z.shape)
        )
        gradient_covariance = prior - V.transpose(-1, -2) @ V
        c, s_y = self._coefficient, self._sigma_y
        return ValueGradientPosterior(
            mean=value.mean.reshape(X.shape[:-1]),
            variance=value.variance.reshape(X.shape[:-1]),
            gradient_mean=s_y * gradient_mean / c,
            cross_covariance=s_y**2 * cross / c,
            gradient_covariance=s_y**2 * gradient_covariance / (c.unsqueeze(-1) * c),
        )
