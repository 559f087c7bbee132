"""EI via gradient norms, "EI-GN": EI of ``H(x) = f(x) + lam ||grad f(x)||^2``.

``H`` is moment-matched to a Gaussian from the joint posterior of ``(f, grad f)``
(``compressbo.bo.models.derivative``) and ``H+ = min_i mu_H(x_i)``; ``lam = 0`` is EI. With
observed gradients the joint posterior comes from a gradient-enhanced GP
(``compressbo.bo.models.gradient_enhanced``, any ``JointPosteriorModel``) instead.
"""

from __future__ import annotations

import torch
from botorch.models.model import Model
from torch import Tensor

from compressbo.bo.models.derivative import JointPosteriorModel, ValueGradientPosterior, joint_model
from compressbo.bo.acquisition.analytic import POSTERIOR_VARIANCE_FLOOR, MomentAcquisition, ei_h

__all__ = ["ExpectedImprovementGradientNorm", "JointPosteriorModel", "gradient_norm_moments"]


# ------------------------------- EI via gradient norms -------------------------------


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


class ExpectedImprovementGradientNorm(MomentAcquisition):
    r"""EI via gradient norms: ``EI_GN(x) = s_H h((H+ - mu_H) / s_H)``, minimization.

    ``H(x) = f(x) + lam ||grad f(x)||^2`` rewards points that are both good and near
    first-order stationarity; ``(mu_H, s_H^2)`` are its exact posterior moments
    (``gradient_norm_moments``), used as a Gaussian. With ``lam = 0`` it is exactly
    BoTorch's ``ExpectedImprovement(best_f=mu+, maximize=False)``.

    The joint posterior of ``(f, grad f)`` is ``joint_model(model).joint_posterior``: the
    derivative of a value GP (``DerivativeGP``), or the model's own when it is a
    ``JointPosteriorModel`` (a GP that observed gradients).

    Example:
        >>> eign = ExpectedImprovementGradientNorm(model, train_X, lam=0.01)
        >>> values = eign(test_X)  # test_X: b x 1 x d -> b
    """

    def __init__(
        self, model: Model | JointPosteriorModel, X_observed: Tensor, lam: float
    ) -> None:
        r"""Set up EI-GN with the incumbent ``H+ = min_i mu_H(x_i)``.

        Args:
            model: A fitted value GP (``compressbo.bo.models.gp.fit_gp``) or a gradient-enhanced
                GP (``compressbo.bo.models.gradient_enhanced.fit_gradient_gp``).
            X_observed: A ``n x d`` tensor of observed inputs.
            lam: The weight ``lam >= 0`` of the squared gradient norm.
        """
        super().__init__(model=model)
        self.derivative = joint_model(model)
        self.lam = float(lam)
        with torch.no_grad():
            joint = self.derivative.joint_posterior(X_observed)
            mean = self.derivative.value_mean(X_observed)  # as EI's mu+ exactly
            mean_H = mean + (gradient_norm_moments(joint, self.lam)[0] - joint.mean)
        self.register_buffer("best_H", mean_H.min())

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(mu_H, s_H^2)`` at ``batch_shape x 1 x d`` inputs, each ``batch_shape``."""
        return gradient_norm_moments(self.derivative.joint_posterior(X.squeeze(-2)), self.lam)

    def value(self, mean: Tensor, variance: Tensor) -> Tensor:
        r"""EI-GN from ``(mu_H, s_H^2)``: ``s_H h((H+ - mu_H) / s_H)``."""
        sigma = variance.clamp_min(POSTERIOR_VARIANCE_FLOOR).sqrt()
        return sigma * ei_h(-((mean - self.best_H) / sigma))
