"""The exact knowledge gradient over a finite set (Frazier et al., 2009)."""

from __future__ import annotations


import torch
from botorch.models.model import Model
from torch import Tensor

from compressbo.bo.acquisition.analytic import ei_h



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
    return (gaps * ei_h(-c.abs())).sum()


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
