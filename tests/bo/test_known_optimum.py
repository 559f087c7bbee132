from __future__ import annotations

import math

import pytest
import torch
from botorch.utils.sampling import manual_seed

from compressbo.bo.acquisition import make_acquisition
from compressbo.exceptions import UserInputError
from compressbo.bo.models.gp import fit_gp
from compressbo.bo.acquisition.known_optimum import confidence_bound_minimization, expected_regret, NegativeConfidenceBoundMinimization, NegativeExpectedRegret
from compressbo.bo.models.known_optimum import fit_transformed_gp, transformed_moments, transformed_observations
from compressbo.bo.optimizer import Optimizer

BOUNDS = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
F_STAR = -1.0  # min of -sin(3 x0) + (x1 - 1.2)^2 over the box, attained at (pi/6, 1.2)


def objective(X: torch.Tensor) -> torch.Tensor:
    return -torch.sin(3 * X[..., 0]) + (X[..., 1] - 1.2) ** 2


@pytest.fixture(scope="module")
def fitted():
    generator = torch.Generator().manual_seed(0)
    X = BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * torch.rand(14, 2, generator=generator).double()
    noise_std = 0.02 + 0.05 * X[:, 0]
    Y = objective(X) + noise_std * torch.randn(14, generator=generator).double()
    model = fit_gp(X, Y, noise_std**2, BOUNDS)
    return model, X, fit_transformed_gp(model, F_STAR)


def grid(k: int = 41) -> torch.Tensor:
    """``k^2 x 1 x 2`` points covering the box and a margin outside it."""
    u = torch.linspace(-0.2, 1.2, k, dtype=torch.float64)
    U = torch.cartesian_prod(u, u)
    return (BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * U).unsqueeze(-2)


def test_transformed_observations_and_delta_method_variances():
    Y = torch.tensor([[3.0], [1.0], [0.5], [0.45]], dtype=torch.float64)
    Yvar = torch.full_like(Y, 0.01)  # tau = 0.1
    g, g_var = transformed_observations(Y, Yvar, f_star=0.5)
    assert torch.allclose(g.squeeze(), torch.tensor([5.0, 1.0, 0.0, 0.0]).double().sqrt())
    # delta method tau^2 / (2 (y - f*)) where the gap exceeds tau; gap floored at tau
    expected = torch.tensor([0.01 / 5.0, 0.01 / 1.0, 0.01 / 0.2, 0.01 / 0.2]).double()
    assert torch.allclose(g_var.squeeze(), expected)
    # the delta method is right for small noise: compare with the sampled spread
    generator = torch.Generator().manual_seed(0)
    samples = 3.0 + 0.01 * torch.randn(200_000, generator=generator).double()
    spread = transformed_observations(samples.unsqueeze(-1), samples.unsqueeze(-1), 0.5)[0]
    assert spread.var().item() == pytest.approx(1e-4 / 5.0, rel=0.02)


def test_transformed_gp_mean_never_falls_below_f_star(fitted):
    model, _, g_model = fitted
    X = grid()
    acquisition = NegativeExpectedRegret(g_model, F_STAR)
    with torch.no_grad():
        mean_f, std_f = acquisition.moments(X)
        value_mean = model.posterior(X).mean.reshape(-1)
    assert torch.all(mean_f >= F_STAR) and torch.all(std_f >= 0)
    # the two models tell the same story where data lie ...
    assert (mean_f - value_mean).abs().median() < 0.3
    # ... and the linearized moments are the stated formulas of g's posterior
    with torch.no_grad():
        posterior_g = g_model.posterior(X)
    mu_g, var_g = posterior_g.mean.reshape(-1), posterior_g.variance.reshape(-1)
    assert torch.allclose(mean_f, F_STAR + 0.5 * mu_g**2)
    assert torch.allclose(std_f, mu_g.abs() * var_g.sqrt())


def test_cbm_is_zero_exactly_at_mean_f_star_with_zero_variance():
    # a point where the transformed GP is certain of the optimum: mu_g = 0 gives
    # mu_f = f* and s_f = |mu_g| s_g = 0 whatever g's own variance
    mean_f, std_f = transformed_moments(
        torch.tensor([0.0, 0.0, 0.3, 1e-3], dtype=torch.float64),
        torch.tensor([0.7, 0.0, 0.0, 0.0], dtype=torch.float64),
        F_STAR,
    )
    assert mean_f[0].item() == F_STAR and std_f[0].item() == 0.0
    cbm = confidence_bound_minimization(mean_f, std_f, F_STAR, beta=2.0)
    assert cbm[:2].tolist() == [0.0, 0.0]
    # and only there: any gap to f* or any spread is positive
    assert torch.all(cbm[2:] > 0)
    spread = confidence_bound_minimization(
        torch.tensor([F_STAR]).double(), torch.tensor([1e-8]).double(), F_STAR
    )
    assert spread.item() > 0


def test_cbm_class_is_negated_cbm_on_the_transformed_moments(fitted):
    _, _, g_model = fitted
    X = grid(9)
    cbm = NegativeConfidenceBoundMinimization(g_model, F_STAR, beta=3.0)
    with torch.no_grad():
        mean_f, std_f = cbm.moments(X)
        values = cbm(X)
    assert torch.equal(values, -((mean_f - F_STAR).abs() + 3.0**0.5 * std_f))
    assert torch.all(values <= 0)


def test_erm_matches_its_monte_carlo_expectation(fitted):
    _, _, g_model = fitted
    generator = torch.Generator().manual_seed(3)
    X = BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * torch.rand(6, 1, 2, generator=generator).double()
    acquisition = NegativeExpectedRegret(g_model, F_STAR)
    with torch.no_grad():
        erm = -acquisition(X)
        mean_f, std_f = acquisition.moments(X)
    assert torch.all(std_f > 1e-3)  # the Gaussian part matters
    F = mean_f + std_f * torch.randn(200_000, 6, generator=generator).double()
    regret = (F - F_STAR).clamp_min(0)
    se = regret.std(0) / math.sqrt(regret.shape[0])
    assert torch.all((erm - regret.mean(0)).abs() <= 4 * se)
    # and the Gaussian lemma in the zero-variance limit: max(mu - f*, 0)
    zero = expected_regret(mean_f, torch.zeros_like(std_f), F_STAR)
    assert torch.allclose(zero, mean_f - F_STAR, rtol=1e-9)


@pytest.mark.parametrize("name", ["erm", "cbm"])
def test_missing_f_star_says_how_to_pass_it(name, fitted):
    model, X, _ = fitted
    with pytest.raises(UserInputError, match="known_optimum VALUE.*known optimum f_star") as info:
        make_acquisition(name, model, X)
    assert info.value.setting == "known_optimum"  # the command line names --known-optimum
    with pytest.raises(UserInputError, match="known_optimum VALUE") as info:
        Optimizer(BOUNDS, acquisition=name)  # before any evaluation is spent
    assert info.value.setting == "known_optimum"
    with pytest.raises(UserInputError, match="finite number"):
        Optimizer(BOUNDS, acquisition=name, acquisition_options={"f_star": "low"})


@pytest.mark.parametrize("name", ["erm", "cbm"])
def test_optimizer_proposes_in_bounds_with_a_known_optimum(name):
    optimizer = Optimizer(
        BOUNDS,
        acquisition=name,
        n_init=5,
        seed=0,
        acquisition_options={"f_star": F_STAR},
        num_restarts=2,
        raw_samples=32,
    )
    generator = torch.Generator().manual_seed(0)
    with manual_seed(0):
        for _ in range(7):
            x = optimizer.ask()
            y = objective(x).item() + 0.05 * torch.randn(1, generator=generator).item()
            optimizer.tell(x, y, 0.0025)
    assert torch.all(x >= BOUNDS[0]) and torch.all(x <= BOUNDS[1])
    value = optimizer.last_acquisition_value
    assert value is not None and math.isfinite(value) and value <= 0
