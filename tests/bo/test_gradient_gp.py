from __future__ import annotations

import json
import math

import pytest
import torch
from botorch.utils.sampling import manual_seed

from compressbo.bo.acquisition import (
    ExpectedImprovementGradientNorm,
    gradient_norm_moments,
    make_acquisition,
)
from compressbo.exceptions import UserInputError
from compressbo.bo.models.gp import BELIEVER_VARIANCE, fit_gp
from compressbo.bo.models.gradient_enhanced import fit_gradient_gp
from compressbo.bo.optimizer import Optimizer

BOUNDS = torch.tensor([[0.0, -1.0], [1.0, 3.0]], dtype=torch.float64)  # not a cube


def smooth(X: torch.Tensor) -> torch.Tensor:
    return torch.sin(4 * X[..., 0]) + 0.3 * (X[..., 1] - 1.0) ** 2


def quadratic(X: torch.Tensor) -> torch.Tensor:
    x0, x1 = X[..., 0], X[..., 1]
    return 2 * (x0 - 0.4) ** 2 + 0.5 * (x1 - 1.2) ** 2 + 0.6 * x0 * x1


def uniform(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * u


def observe(function, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and exact gradients (autograd), as the synthetic problems provide them."""
    X = X.clone().requires_grad_(True)
    Y = function(X)
    (dY,) = torch.autograd.grad(Y.sum(), X)
    return Y.detach(), dY


@pytest.fixture(scope="module", params=["rbf", "matern52"])
def fitted(request):
    X = uniform(10, seed=0)
    Y, dY = observe(smooth, X)
    with manual_seed(0):
        model = fit_gradient_gp(X, Y, dY, torch.zeros(10), BOUNDS, kernel=request.param)
    return model, X, Y, dY


@pytest.fixture(scope="module", params=["rbf", "matern52"])
def sparse(request):
    """Fitted on 3 points: posterior variances are far above round-off and noise floors."""
    X = uniform(3, seed=9)
    Y, dY = observe(smooth, X)
    with manual_seed(0):
        return fit_gradient_gp(X, Y, dY, torch.zeros(3), BOUNDS, kernel=request.param)


def test_posterior_mean_interpolates_noise_free_values_and_gradients(fitted):
    model, X, Y, dY = fitted
    with torch.no_grad():
        joint = model.joint_posterior(X)
    assert (joint.mean - Y).abs().max() < 1e-2 * Y.std()
    assert (joint.gradient_mean - dY).abs().max() < 1e-2 * dY.abs().max()
    assert joint.variance.max() < 1e-4 * Y.var()
    assert joint.gradient_mean.shape == (10, 2)
    assert joint.gradient_covariance.shape == (10, 2, 2)


def test_known_value_noise_is_used():
    X = uniform(10, seed=0)
    Y, dY = observe(smooth, X)
    Yvar = torch.full((10,), 0.05**2, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    noisy = Y + 0.05 * torch.randn(10, generator=generator, dtype=torch.float64)
    with manual_seed(0):
        model = fit_gradient_gp(X, noisy, dY, Yvar, BOUNDS)
    with torch.no_grad():
        variance = model.joint_posterior(X).variance
    # exact gradients pin f down to a constant, which n noisy values leave ~ Yvar / n
    assert torch.all(variance > 0.1 * Yvar / 10) and torch.all(variance < Yvar)


def test_gradient_posterior_matches_finite_differences(sparse):
    model = sparse
    X = uniform(5, seed=1)
    h = 1e-5 * (BOUNDS[1] - BOUNDS[0])
    with torch.no_grad():
        joint = model.joint_posterior(X)
        for j in range(2):
            step = torch.zeros(2, dtype=torch.float64)
            step[j] = h[j]
            up, down = model.joint_posterior(X + step), model.joint_posterior(X - step)
            difference = (up.mean - down.mean) / (2 * h[j])
            assert torch.allclose(joint.gradient_mean[:, j], difference, rtol=1e-5, atol=1e-7)
            # Cov(f, d_j f) and Var(d_j f) from differences of the value covariance
            e = 100 * step
            for i, x in enumerate(X):
                Z = (torch.stack([x - e, x, x + e]) - BOUNDS[0]) / (BOUNDS[1] - BOUNDS[0])
                # outputs are interleaved (f, df/dz_1, df/dz_2): every third is a value
                C = model(Z).covariance_matrix[::3, ::3] * model.y_std**2
                cross = (C[1, 2] - C[1, 0]) / (2 * e[j])
                grad_var = (C[2, 2] - 2 * C[0, 2] + C[0, 0]) / (2 * e[j]) ** 2
                assert joint.cross_covariance[i, j].item() == pytest.approx(
                    cross.item(), rel=1e-3, abs=1e-3 * grad_var.sqrt().item()
                )
                assert joint.gradient_covariance[i, j, j].item() == pytest.approx(
                    grad_var.item(), rel=1e-2
                )


def test_moments_of_h_match_monte_carlo(fitted):
    model, _, _, _ = fitted
    X = uniform(4, seed=2)
    with torch.no_grad():
        joint = model.joint_posterior(X)
    lam = 0.2 / joint.gradient_covariance.diagonal(dim1=-2, dim2=-1).sum(-1).mean().item()
    mean_H, var_H = gradient_norm_moments(joint, lam)
    mean = torch.cat([joint.mean.unsqueeze(-1), joint.gradient_mean], dim=-1)
    top = torch.cat([joint.variance[:, None], joint.cross_covariance], dim=-1)
    rest = torch.cat([joint.cross_covariance.unsqueeze(-1), joint.gradient_covariance], -1)
    L = torch.linalg.cholesky(torch.cat([top.unsqueeze(-2), rest], dim=-2))
    n = 400_000
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(n, 4, 3, 1, generator=generator, dtype=torch.float64)
    samples = mean + (L @ eps).squeeze(-1)
    H = samples[..., 0] + lam * samples[..., 1:].pow(2).sum(-1)
    assert torch.all(var_H > 1.5 * joint.variance)  # the gradient terms matter
    assert torch.all((mean_H - H.mean(0)).abs() <= 4 * H.std(0) / math.sqrt(n))
    centred = H - H.mean(0)
    se_var = ((centred**4).mean(0) - H.var(0) ** 2).sqrt() / math.sqrt(n)
    assert torch.all((var_H - H.var(0)).abs() <= 4 * se_var)


def test_gradients_predict_a_held_out_quadratic_better_than_values_alone():
    X, X_test = uniform(5, seed=3), uniform(200, seed=4)
    Y, dY = observe(quadratic, X)
    with manual_seed(0):
        gradient_model = fit_gradient_gp(X, Y, dY, torch.zeros(5), BOUNDS)
        value_model = fit_gp(X, Y, torch.zeros(5), BOUNDS)
    with torch.no_grad():
        with_gradients = gradient_model.joint_posterior(X_test).mean
        values_only = value_model.posterior(X_test).mean.reshape(-1)
    truth = quadratic(X_test)
    rmse = lambda mean: (mean - truth).pow(2).mean().sqrt().item()  # noqa: E731
    assert rmse(with_gradients) < 0.25 * rmse(values_only)


def test_condition_on_pending_keeps_the_mean_and_collapses_the_variance(sparse):
    model = sparse
    X_pending, X_test = uniform(2, seed=5), uniform(6, seed=6)
    believer = model.condition_on_pending(X_pending)
    with torch.no_grad():
        before, after = model.joint_posterior(X_pending), believer.joint_posterior(X_pending)
        assert torch.allclose(after.mean, before.mean, atol=1e-6)
        # a believed observation bounds the variance by its own noise
        assert torch.all(after.variance <= BELIEVER_VARIANCE * model.y_std**2)
        assert torch.all(after.variance < 0.05 * before.variance)
        elsewhere = believer.joint_posterior(X_test).mean
        assert torch.allclose(elsewhere, model.joint_posterior(X_test).mean, atol=1e-4)


def test_eign_uses_the_gradient_gp_and_rejects_it_elsewhere(fitted):
    model, X, _, _ = fitted
    acquisition = make_acquisition("eign", model, X)
    assert isinstance(acquisition, ExpectedImprovementGradientNorm)
    prior_std, prior_sq_gradient = model.prior_gradient_scale()
    assert acquisition.lam * prior_sq_gradient == pytest.approx(0.1 * prior_std)
    X_test = uniform(8, seed=7).unsqueeze(-2).requires_grad_(True)
    values = acquisition(X_test)
    (grad,) = torch.autograd.grad(values.sum(), X_test)
    assert values.shape == (8,) and torch.all(values >= 0) and torch.isfinite(grad).all()
    with pytest.raises(UserInputError, match="needs a value GP"):
        make_acquisition("ei", model, X)


def test_bad_gradients_are_rejected():
    X = uniform(4, seed=0)
    Y, dY = observe(smooth, X)
    with pytest.raises(UserInputError, match="dY must be a"):
        fit_gradient_gp(X, Y, dY[:, :1], torch.zeros(4), BOUNDS)
    with pytest.raises(UserInputError, match="unknown kernel 'matern32'"):
        fit_gradient_gp(X, Y, dY, torch.zeros(4), BOUNDS, kernel="matern32")
    with pytest.raises(UserInputError, match="grad_var must be"):
        fit_gradient_gp(X, Y, dY, torch.zeros(4), BOUNDS, grad_var=-1.0)
    optimizer = Optimizer(BOUNDS, acquisition="eign")
    with pytest.raises(UserInputError, match="gradient must be 2 finite values"):
        optimizer.tell(X[0], Y[0].item(), 0.0, gradient=[1.0, math.nan])


def told(gradients: str) -> Optimizer:
    """An eign optimizer told 5 observations; ``gradients``: "all", "none" or "some"."""
    optimizer = Optimizer(
        BOUNDS, acquisition="eign", n_init=5, seed=0, num_restarts=2, raw_samples=32
    )
    X = uniform(5, seed=8)
    Y, dY = observe(smooth, X)
    for i in range(5):
        with_gradient = gradients == "all" or (gradients == "some" and i > 0)
        optimizer.tell(X[i], Y[i].item(), 1e-4, gradient=dY[i] if with_gradient else None)
    return optimizer


def test_optimizer_proposes_with_gradients_and_round_trips_them():
    optimizer = told("all")
    state = json.loads(json.dumps(optimizer.state_dict()))
    batch = optimizer.ask(2)  # the second sees the first as pending (kriging believer)
    assert torch.all(batch >= BOUNDS[0]) and torch.all(batch <= BOUNDS[1])
    assert math.isfinite(optimizer.last_acquisition_value)
    restored = Optimizer.from_state_dict(state)
    assert torch.equal(restored.gradients, told("all").gradients)
    assert torch.equal(restored.ask(), batch[0])
    # the proposal depends on the gradients: without them it is the value GP's
    assert not torch.allclose(told("none").ask(), batch[0], atol=1e-3)


@pytest.mark.parametrize("gradients", ["all", "none"])  # gradient-enhanced GP, value GP
def test_pending_points_join_the_baseline_of_the_believer_model(gradients, monkeypatch):
    import compressbo.bo.optimizer as module

    baselines = []
    original = module.make_acquisition

    def recording(name, model, X_observed, **options):
        baselines.append(X_observed.shape[0])
        return original(name, model, X_observed, **options)

    monkeypatch.setattr(module, "make_acquisition", recording)
    told(gradients).ask(2)
    assert baselines == [5, 6]  # the second proposal's incumbent ranges over the pending point too


def test_optimizer_falls_back_to_the_value_gp_unless_every_point_has_a_gradient():
    some = told("some")
    assert torch.isnan(some.gradients[0]).all() and not torch.isnan(some.gradients[1:]).any()
    state = json.loads(json.dumps(some.state_dict()))
    assert state["gradients"][0] is None
    assert torch.equal(some.ask(), told("none").ask())
