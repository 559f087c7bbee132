"""The composite surrogate f = cost(x) + gamma * e(x): moments, CEI, and the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from compressbo.bo import Optimizer
from compressbo.bo.acquisition import ACQUISITION_NAMES, acquisition_spec, make_acquisition
from compressbo.bo.acquisition.corrected import CorrectedExpectedImprovement
from compressbo.bo.models.composite import CompositeModel
from compressbo.bo.models.gp import fit_gp, incumbent
from compressbo.exceptions import OptimizerInputError, SettingError, UserInputError

BOX = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


def _cost(X: torch.Tensor) -> torch.Tensor:
    """A known, differentiable cost: batch_shape x d -> batch_shape."""
    return 0.5 * X.sum(-1) + 0.1 * X[..., 0] ** 2


def _error(X: torch.Tensor) -> torch.Tensor:
    return torch.exp(-6 * X.sum(-1)) + 0.1 * torch.sin(5 * X[..., 1])


def _error_gp(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    E = _error(X) + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    return X, fit_gp(X, E, torch.full((n,), 0.02**2, dtype=torch.float64), BOX)


@pytest.mark.parametrize("gamma", [1.0, 0.4])
def test_composite_moments_are_the_cost_plus_the_scaled_error_moments(gamma):
    X_train, gp = _error_gp()
    model = CompositeModel(gp, _cost, gamma)
    X = torch.rand(5, 3, 2, dtype=torch.float64)  # b x q x d
    with torch.no_grad():
        inner = gp.posterior(X)
        posterior = model.posterior(X)
    assert posterior.mean.shape == (5, 3, 1)
    assert torch.allclose(posterior.mean.squeeze(-1), _cost(X) + gamma * inner.mean.squeeze(-1), atol=1e-12)
    covariance = posterior.distribution.covariance_matrix
    assert torch.allclose(covariance, gamma**2 * inner.distribution.covariance_matrix, atol=1e-12)
    # the incumbent is the observed point with the lowest composite mean, not the lowest error
    with torch.no_grad():
        composite_mean = _cost(X_train) + gamma * gp.posterior(X_train).mean.reshape(-1)
    assert torch.equal(incumbent(model, X_train), X_train[composite_mean.argmin()].unsqueeze(0))


def test_cei_on_the_composite_matches_monte_carlo_over_joint_error_samples():
    X_train, gp = _error_gp()
    model = CompositeModel(gp, _cost, 1.0)
    x_plus = incumbent(model, X_train)
    cei = CorrectedExpectedImprovement(model, x_plus)
    candidates = torch.tensor([[0.05, 0.1], [0.3, 0.6], [0.8, 0.2], [0.5, 0.5]], dtype=torch.float64)
    n = 200_000
    torch.manual_seed(1)
    for x in candidates:
        pair = torch.stack([x, x_plus.reshape(-1)])  # (x, x+): 2 x d
        with torch.no_grad():
            value = cei(x.reshape(1, 1, -1)).item()
            samples = gp.posterior(pair).rsample(torch.Size([n])).squeeze(-1)  # n x 2 joint error samples
        f = _cost(pair) + samples  # the composite objective at (x, x+)
        improvement = (f[:, 1] - f[:, 0]).clamp_min(0)
        mean, stderr = improvement.mean().item(), improvement.std().item() / math.sqrt(n)
        assert abs(value - mean) <= 4 * stderr + 1e-9, (x.tolist(), value, mean, stderr)


def test_the_relaxed_cost_gradient_reaches_the_acquisition():
    X_train, gp = _error_gp()
    model = CompositeModel(gp, _cost, 1.0)
    acquisition = make_acquisition("logcei", model, X_train)
    X = torch.tensor([[[0.4, 0.3]]], dtype=torch.float64, requires_grad=True)
    acquisition(X).sum().backward()
    assert bool(torch.isfinite(X.grad).all()) and X.grad.abs().sum() > 0


def _run(optimizer: Optimizer, n: int, gamma: float = 1.0) -> None:
    g = torch.Generator().manual_seed(5)
    for _ in range(n):
        x = optimizer.ask()
        e = float(_error(x)) + 0.02 * float(torch.randn((), generator=g, dtype=torch.float64))
        optimizer.tell(x, float(_cost(x)) + gamma * e, gamma**2 * 0.02**2, modelled=(e, 0.02**2))


COMPOSITE = [name for name in ACQUISITION_NAMES if acquisition_spec(name).composite]


@pytest.mark.parametrize("acquisition", COMPOSITE)
def test_every_composite_acquisition_proposes_with_pending_points(acquisition):
    optimizer = Optimizer(BOX, acquisition=acquisition, seed=0, n_init=5, num_restarts=2, raw_samples=32,
                          surrogate="composite", known_cost=_cost, cost_weight=0.5)  # fmt: skip
    _run(optimizer, 6, gamma=0.5)
    X = optimizer.ask(2)  # the second proposal sees the first as pending
    assert X.shape == (2, 2) and not torch.allclose(X[0], X[1])
    assert bool(((X >= 0) & (X <= 1)).all())


def test_composite_optimizer_state_round_trip_and_recommendation():
    optimizer = Optimizer(BOX, acquisition="cei", seed=2, n_init=5, num_restarts=2, raw_samples=32,
                          surrogate="composite", known_cost=_cost, warp="learned")  # fmt: skip
    _run(optimizer, 8)
    state = optimizer.state_dict()
    assert state["surrogate"] == "composite" and len(state["modelled"]) == 8
    restored = Optimizer.from_state_dict(state, known_cost=_cost)
    assert torch.equal(restored.ask(), optimizer.ask())
    recommendation = optimizer.recommend()
    model = optimizer._fitted_model()
    assert isinstance(model, CompositeModel)
    with torch.no_grad():
        means = model.posterior(optimizer.X).mean.reshape(-1)
    assert recommendation.mean == pytest.approx(means.min().item())
    with pytest.raises(SettingError, match="needs the objective's known cost"):
        Optimizer.from_state_dict(state)
    truncated = {**state, "X": state["X"][:3], "Y": state["Y"][:3], "Yvar": state["Yvar"][:3]}  # modelled: 8 rows
    with pytest.raises(OptimizerInputError, match="disagree in length .*modelled 8"):
        Optimizer.from_state_dict(truncated, known_cost=_cost)


def test_composite_refusals_are_one_line():
    with pytest.raises(SettingError, match="needs the objective's known cost"):
        Optimizer(BOX, surrogate="composite")
    with pytest.raises(SettingError, match="needs a GP of the objective itself"):
        Optimizer(BOX, acquisition="kg", surrogate="composite", known_cost=_cost)
    with pytest.raises(SettingError, match="unknown surrogate 'product'"):
        Optimizer(BOX, surrogate="product")
    optimizer = Optimizer(BOX, surrogate="composite", known_cost=_cost)
    with pytest.raises(UserInputError, match="modelled=\\(e, var_e\\)"):
        optimizer.tell(torch.tensor([0.5, 0.5]), 1.0, 0.01)
