from __future__ import annotations

import math
import warnings

import pytest
import torch
from botorch.acquisition.analytic import ExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.utils.sampling import manual_seed
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood

from compressbo.bo.acquisition import (
    EIGN_RELATIVE_WEIGHT,
    ExpectedImprovementGradientNorm,
    gradient_norm_moments,
    make_acquisition,
)
from compressbo.exceptions import UserInputError
from compressbo.bo.models.gp import condition_on_pending, fit_gp
from compressbo.bo.models.derivative import DerivativeGP
from compressbo.bo.optimizer import Optimizer

BOUNDS = torch.tensor([[0.0, -1.0], [1.0, 3.0]], dtype=torch.float64)  # not a cube


def data(n: int = 12, seed: int = 0, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    X = BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * torch.rand(n, 2, generator=generator).double()
    noise_std = 0.02 + 0.05 * X[:, 0]
    Y = torch.sin(4 * X[:, 0]) + 0.3 * (X[:, 1] - 1.0) ** 2
    Y = scale * (Y + noise_std * torch.randn(n, generator=generator).double())
    return X, Y, (scale * noise_std) ** 2


def matern_gp(X, Y, Yvar, nu: float) -> SingleTaskGP:
    model = SingleTaskGP(
        X,
        Y.unsqueeze(-1),
        Yvar.unsqueeze(-1),
        covar_module=ScaleKernel(MaternKernel(nu=nu, ard_num_dims=2)),
        input_transform=Normalize(2, bounds=BOUNDS),
        outcome_transform=Standardize(m=1),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


@pytest.fixture(scope="module", params=["rbf", "matern52", "matern32", "conditioned"])
def fitted(request):
    X, Y, Yvar = data()
    with manual_seed(0):
        if request.param.startswith("matern"):
            return matern_gp(X, Y, Yvar, nu=2.5 if request.param == "matern52" else 1.5), X
        model = fit_gp(X, Y, Yvar, BOUNDS)
    if request.param == "conditioned":  # a kriging-believer model, as with pending points
        return condition_on_pending(model, torch.tensor([[0.4, 0.5]]).double()), X
    return model, X


def candidates(k: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * torch.rand(k, 2, generator=generator).double()


def test_gradient_posterior_matches_finite_differences(fitted):
    model, _ = fitted
    base = getattr(model.covar_module, "base_kernel", model.covar_module)
    # Matern-3/2 has an r^3 term: the second difference is biased by O(step / l)
    rel = 2e-2 if getattr(base, "nu", None) == 1.5 else 2e-3
    X = candidates()
    h = 1e-5 * (BOUNDS[1] - BOUNDS[0])
    joint = DerivativeGP(model).joint_posterior(X)
    with torch.no_grad():
        for j in range(2):
            step = torch.zeros(2, dtype=torch.float64)
            step[j] = h[j]
            up = model.posterior((X + step).unsqueeze(-2)).mean.reshape(-1)
            down = model.posterior((X - step).unsqueeze(-2)).mean.reshape(-1)
            assert torch.allclose(
                joint.gradient_mean[:, j], (up - down) / (2 * h[j]), rtol=1e-5, atol=1e-7
            )
            # Cov(f, d_j f) and Cov(d_j f, d_j f) from differences of the covariance
            for i, x in enumerate(X):
                e = step * 10  # larger step: the covariance is accurate to ~1e-12 only
                posterior = model.posterior(torch.stack([x - e, x, x + e]))
                C = posterior.distribution.covariance_matrix
                cross = (C[1, 2] - C[1, 0]) / (2 * e[j])  # central differences
                grad_var = (C[2, 2] - 2 * C[0, 2] + C[0, 0]) / (2 * e[j]) ** 2
                assert joint.cross_covariance[i, j].item() == pytest.approx(
                    cross.item(), rel=1e-3, abs=1e-4 * grad_var.sqrt().item()
                )
                assert joint.gradient_covariance[i, j, j].item() == pytest.approx(
                    grad_var.item(), rel=rel
                )
    assert torch.all(torch.linalg.eigvalsh(joint.gradient_covariance) > 0)
    assert torch.all(joint.variance > 0)


def test_full_gradient_covariance_matches_mixed_differences_of_the_posterior_covariance(fitted):
    """All of Cov(grad f(x)), off-diagonals included: d^2 k_n(a, b) / da_i db_j at a = b = x.

    (Autograd cannot check this: kernels clamp the distance at a = b, which zeroes its second
    derivative there.)
    """
    model, _ = fitted
    base = getattr(model.covar_module, "base_kernel", model.covar_module)
    rough = getattr(base, "nu", None) == 1.5  # Matern-3/2: an O(step / l) bias, so a smaller step
    rel, h = (3e-2, 1e-4 * (BOUNDS[1] - BOUNDS[0])) if rough else (3e-3, 1e-3 * (BOUNDS[1] - BOUNDS[0]))
    joint = DerivativeGP(model).joint_posterior(candidates(k=3))

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return model.posterior(torch.stack([a, b])).distribution.covariance_matrix[0, 1].item()

    with torch.no_grad():
        for x, expected in zip(candidates(k=3), joint.gradient_covariance):
            mixed = torch.zeros(2, 2, dtype=torch.float64)
            for i in range(2):
                for j in range(2):
                    ei, ej = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
                    ei[i], ej[j] = h[i], h[j]
                    mixed[i, j] = (k(x + ei, x + ej) - k(x + ei, x - ej) - k(x - ei, x + ej) + k(x - ei, x - ej)) / (
                        4 * h[i] * h[j]
                    )
            scale = expected.diagonal().sqrt()
            torch.testing.assert_close(expected / torch.outer(scale, scale), mixed / torch.outer(scale, scale),
                                       rtol=0, atol=rel)  # fmt: skip


def test_gradient_posterior_is_differentiable_for_the_optimizer(fitted):
    model, X_observed = fitted
    X = torch.cat([candidates(), X_observed[:2]]).requires_grad_(True)  # incl. data points
    joint = DerivativeGP(model).joint_posterior(X)
    total = joint.gradient_mean.sum() + joint.gradient_covariance.sum()
    (grad,) = torch.autograd.grad(total, X)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_lam_zero_is_exactly_ei(fitted):
    model, X = fitted
    X_test = candidates(k=32).unsqueeze(-2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mu_plus = model.posterior(X).mean.min()
        ei = ExpectedImprovement(model, best_f=mu_plus, maximize=False)(X_test)
        eign = make_acquisition("eign", model, X, lam=0.0)(X_test)
    assert torch.all(ei > 0)
    assert torch.equal(eign, ei)


def test_moments_of_h_match_monte_carlo(fitted):
    model, _ = fitted
    X = candidates(k=4)
    joint = DerivativeGP(model).joint_posterior(X)
    lam = 0.2 / joint.gradient_covariance.diagonal(dim1=-2, dim2=-1).sum(-1).mean().item()
    mean_H, var_H = gradient_norm_moments(joint, lam)
    # joint samples of (f, grad f) from the 3 x 3 Gaussian at each point
    mean = torch.cat([joint.mean.unsqueeze(-1), joint.gradient_mean], dim=-1)
    top = torch.cat([joint.variance[:, None], joint.cross_covariance], dim=-1)
    rest = torch.cat([joint.cross_covariance.unsqueeze(-1), joint.gradient_covariance], -1)
    covariance = torch.cat([top.unsqueeze(-2), rest], dim=-2).detach()
    L = torch.linalg.cholesky(covariance)
    generator = torch.Generator().manual_seed(0)
    n = 400_000
    eps = torch.randn(n, 4, 3, 1, generator=generator, dtype=torch.float64)
    samples = mean.detach() + (L @ eps).squeeze(-1)
    H = samples[..., 0] + lam * samples[..., 1:].pow(2).sum(-1)
    assert torch.all(var_H > 1.5 * joint.variance)  # the gradient terms matter
    se_mean = H.std(0) / math.sqrt(n)
    assert torch.all((mean_H.detach() - H.mean(0)).abs() <= 4 * se_mean)
    # variance of the sample variance: (mu_4 - s^4) / n
    centred = H - H.mean(0)
    se_var = ((centred**4).mean(0) - H.var(0) ** 2).sqrt() / math.sqrt(n)
    assert torch.all((var_H.detach() - H.var(0)).abs() <= 4 * se_var)


def test_default_lam_is_scale_free():
    X, Y, Yvar = data()
    with manual_seed(0):
        model = fit_gp(X, Y, Yvar, BOUNDS)
    with manual_seed(0):
        scaled = fit_gp(X, 10 * Y, 100 * Yvar, BOUNDS)
    a, b = make_acquisition("eign", model, X), make_acquisition("eign", scaled, X)
    prior_std, prior_sq_gradient = a.derivative.prior_gradient_scale()
    assert a.lam * prior_sq_gradient == pytest.approx(EIGN_RELATIVE_WEIGHT * prior_std)
    assert b.lam == pytest.approx(a.lam / 10, rel=1e-4)  # lam is in units of f / |grad f|^2
    X_test = candidates(k=16).unsqueeze(-2)
    with torch.no_grad():
        assert torch.allclose(b(X_test), 10 * a(X_test), rtol=1e-4)
    assert a.best_H.item() > model.posterior(X).mean.min().item()  # lam > 0 matters


def test_eign_optimizes_to_an_in_bounds_candidate_through_the_optimizer():
    X, Y, Yvar = data(n=6)
    optimizer = Optimizer(
        BOUNDS, acquisition="eign", n_init=6, seed=0, num_restarts=2, raw_samples=32
    )
    for x, y, v in zip(X, Y.tolist(), Yvar.tolist()):
        optimizer.tell(x, y, v)
    batch = optimizer.ask(2)  # the second sees the first as pending (kriging believer)
    assert batch.shape == (2, 2)
    assert torch.all(batch >= BOUNDS[0]) and torch.all(batch <= BOUNDS[1])
    assert math.isfinite(optimizer.last_acquisition_value)


def test_eign_rejects_a_negative_lam_and_non_differentiable_kernels():
    X, Y, Yvar = data()
    model = fit_gp(X, Y, Yvar, BOUNDS)
    with pytest.raises(UserInputError, match="lam must be a finite number >= 0"):
        make_acquisition("eign", model, X, lam=-1.0)
    rough = SingleTaskGP(
        X, Y.unsqueeze(-1), Yvar.unsqueeze(-1), covar_module=MaternKernel(nu=0.5)
    )
    with pytest.raises(UserInputError, match="RBF or Matern"):
        ExpectedImprovementGradientNorm(rough, X, lam=1.0)


def test_both_gradient_models_answer_to_one_joint_posterior(fitted):
    """A value GP's DerivativeGP and a gradient-enhanced GP are the same JointPosteriorModel to EI-GN."""
    from compressbo.bo.models.derivative import JointPosteriorModel, joint_model
    from compressbo.bo.models.gradient_enhanced import fit_gradient_gp

    model, X = fitted
    derivative = joint_model(model)
    assert isinstance(derivative, DerivativeGP) and isinstance(derivative, JointPosteriorModel)
    assert not isinstance(model, JointPosteriorModel) and joint_model(derivative) is derivative
    with torch.no_grad():
        assert torch.equal(derivative.value_mean(X), model.posterior(X).mean.reshape(-1))
        assert torch.allclose(derivative.joint_posterior(X).mean, derivative.value_mean(X), atol=1e-8)
    Y = torch.sin(4 * X[:, 0]) + 0.3 * (X[:, 1] - 1.0) ** 2
    dY = torch.stack([4 * torch.cos(4 * X[:, 0]), 0.6 * (X[:, 1] - 1.0)], dim=-1)
    with manual_seed(0):
        gradient_gp = fit_gradient_gp(X, Y, dY, torch.full_like(Y, 1e-4), BOUNDS)
    assert isinstance(gradient_gp, JointPosteriorModel) and joint_model(gradient_gp) is gradient_gp
    with torch.no_grad():
        assert torch.equal(gradient_gp.value_mean(X), gradient_gp.joint_posterior(X).mean)
        a = make_acquisition("eign", gradient_gp, X, lam=0.0)
        assert a.derivative is gradient_gp and torch.equal(a.best_H, gradient_gp.joint_posterior(X).mean.min())
