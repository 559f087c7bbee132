r"""A composite surrogate: a known cost plus a modelled, weighted term.

When the objective is ``f(x) = c(x) + gamma * e(x)`` with the cost ``c`` known exactly (a
plain callable: the BO engine knows nothing of what it measures) and only ``e`` noisy, a GP
models ``e`` alone (with its own known noise variances) and the objective's posterior is

    f(X) | data ~ N(c(X) + gamma * mu_e(X), gamma^2 * K_e(X, X))

for any ``batch x q x d`` input: the known term shifts the means, ``gamma^2`` scales the
covariance, jointly over the ``q`` points. :class:`CompositeModel` is a BoTorch ``Model``
returning exactly that ``GPyTorchPosterior``, so every acquisition built on posteriors works
unchanged in meaning: CEI / LogCEI take the joint 2x2 posterior of ``(f(x), f(x+))`` from
it, Monte Carlo acquisitions sample it, the incumbent (lowest posterior mean among the
observed points) is the lowest ``c + gamma * mu_e``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from torch import Tensor

from compressbo.exceptions import UserInputError

__all__ = ["CompositeModel"]

CostFunction = Callable[[Tensor], Tensor]  # batch_shape x d -> batch_shape, differentiable


class CompositeModel(Model):
    r"""``f = cost(x) + gamma * e(x)`` with ``e`` a fitted single-output GP.

    Example:
        >>> error_gp = fit_gp(X, E, E_var, bounds)
        >>> model = CompositeModel(error_gp, cost, gamma=1.0)
        >>> model.posterior(X_test).mean  # cost(X_test) + mu_e(X_test)

    Args:
        error_model: A fitted single-output model of ``e`` (e.g. ``fit_gp``'s GP).
        cost: The known term, ``batch_shape x d -> batch_shape`` (differentiable where the
            acquisition optimizer needs gradients).
        gamma: The weight of ``e``, ``>= 0``.
    """

    num_outputs = 1

    def __init__(self, error_model: Model, cost: CostFunction, gamma: float) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and gamma >= 0 and gamma < float("inf")):
            raise UserInputError(f"the composite weight gamma must be a finite number >= 0, got {gamma!r}.")
        self.error_model = error_model
        self.cost = cost
        self.gamma = float(gamma)

    @property
    def batch_shape(self) -> torch.Size:
        return self.error_model.batch_shape

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | Tensor = False,
        posterior_transform=None,
    ) -> GPyTorchPosterior:
        r"""The joint posterior of ``f`` at ``X``.

        Args:
            X: A ``batch_shape x q x d`` (or ``q x d``) tensor.
            output_indices: Must be None or ``[0]`` (one output).
            observation_noise: Passed to the error model (its noise, scaled by ``gamma^2``).
            posterior_transform: An optional BoTorch posterior transform, applied last.

        Returns:
            A ``GPyTorchPosterior`` with mean ``cost(X) + gamma * mu_e(X)`` (``batch_shape x
            q x 1``) and covariance ``gamma^2 K_e(X, X)`` (``batch_shape x q x q``).
        """
        if output_indices not in (None, [0]):
            raise UserInputError(f"the composite model has one output, not {output_indices}.")
        inner = self.error_model.posterior(X, observation_noise=observation_noise)
        distribution = inner.distribution
        mean = self.cost(X) + self.gamma * distribution.mean
        covariance = distribution.lazy_covariance_matrix * (self.gamma**2)
        posterior = GPyTorchPosterior(MultivariateNormal(mean, covariance))
        return posterior if posterior_transform is None else posterior_transform(posterior)

    def outcome_scale(self) -> float:
        """The scale of ``f``'s modelled part: ``gamma`` times the error model's outcome std."""
        from compressbo.bo.models.gp import outcome_scale

        return self.gamma * outcome_scale(self.error_model)

    def with_error_model(self, error_model: Model) -> CompositeModel:
        """The same composite around another error model (e.g. one conditioned on pending points)."""
        return CompositeModel(error_model, self.cost, self.gamma)
