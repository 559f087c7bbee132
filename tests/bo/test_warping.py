"""Input warpings of the GP: log scale and the learned Kumaraswamy warp."""

from __future__ import annotations

import math

import pytest
import torch
from botorch.models.transforms.input import Normalize

from compressbo.bo import Optimizer
from compressbo.bo.models.gp import fit_gp, search_bounds, training_data
from compressbo.bo.models.warping import LearnedWarp, LogNormalize, make_input_transform, warp_of
from compressbo.exceptions import SettingError

BOX = torch.tensor([[0.005, 0.01], [1.0, 1.0]], dtype=torch.float64)


def _cliff(X: torch.Tensor) -> torch.Tensor:
    """A function whose structure lives at the bottom of the box: smooth in log x, steep in x."""
    return (X.log() - math.log(0.03)).pow(2).sum(-1)


def _data(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(n, 2, generator=g, dtype=torch.float64)
    X = (BOX[0].log() + U * (BOX[1].log() - BOX[0].log())).exp()  # log-uniform in the box
    Y = _cliff(X) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, Y, torch.full((n,), 0.05**2, dtype=torch.float64)


def test_log_normalize_maps_the_box_to_the_unit_cube_on_the_log_scale():
    t = make_input_transform("log", BOX)
    Z = t(torch.stack([BOX[0], BOX[1], BOX[0].sqrt() * BOX[1].sqrt()]))
    assert torch.allclose(Z, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]], dtype=torch.float64))
    X = torch.rand(5, 2, dtype=torch.float64) * 0.9 + 0.05
    assert torch.allclose(t.untransform(t(X)), X)


@pytest.mark.parametrize("warp", ["none", "log", "learned"])
def test_fit_gp_warps_inside_the_model(warp):
    X, Y, Yvar = _data()
    torch.manual_seed(0)
    model = fit_gp(X, Y, Yvar, BOX, warp=warp)
    assert warp_of(model) == warp
    assert torch.allclose(search_bounds(model), BOX)
    X_back, Y_back, _ = training_data(model)  # the data in the objective's units
    assert torch.allclose(X_back, X, atol=1e-9) and torch.allclose(Y_back.reshape(-1), Y)
    # the posterior is asked at theta itself: a batch of candidates in the box
    posterior = model.posterior(X[:4].unsqueeze(1))
    assert posterior.mean.shape == (4, 1, 1) and bool((posterior.variance > 0).all())


def test_learned_warp_is_fitted_with_the_gp():
    X, Y, Yvar = _data(30)
    torch.manual_seed(0)
    model = fit_gp(X, Y, Yvar, BOX, warp="learned")
    transform = model.input_transform
    assert isinstance(transform, LearnedWarp)
    prior_mode = LearnedWarp(BOX)
    moved = (transform.concentration0 - prior_mode.concentration0).abs().max()
    moved = torch.maximum(moved, (transform.concentration1 - prior_mode.concentration1).abs().max())
    assert moved > 1e-3  # the concentrations are hyperparameters, fitted by the MLL


def test_log_warp_predicts_a_log_scale_function_better_than_no_warp():
    """On held-out points of the low corner, the log-scale GP predicts what the linear one cannot resolve."""
    X, Y, Yvar = _data(30, seed=1)
    g = torch.Generator().manual_seed(2)
    X_test = (BOX[0].log() + torch.rand(200, 2, generator=g, dtype=torch.float64) * (math.log(0.1) - BOX[0].log())).exp()
    errors = {}
    for warp in ("none", "log"):
        torch.manual_seed(0)
        model = fit_gp(X, Y, Yvar, BOX, warp=warp)
        with torch.no_grad():
            mean = model.posterior(X_test).mean.reshape(-1)
        errors[warp] = (mean - _cliff(X_test)).pow(2).mean().sqrt().item()
    assert errors["log"] < 0.7 * errors["none"], errors


def test_optimizer_keeps_its_warp_in_the_state_and_proposes_the_same_point():
    opt = Optimizer(BOX, acquisition="cei", seed=3, warp="log", n_init=5, num_restarts=2, raw_samples=32)
    for _ in range(6):
        x = opt.ask()
        opt.tell(x, float(_cliff(x)), 1e-3)
    state = opt.state_dict()
    assert state["warp"] == "log"
    restored = Optimizer.from_state_dict(state)
    assert restored.warp == "log"
    assert warp_of(restored._fitted_model()) == "log"
    assert torch.equal(restored.ask(), opt.ask())
    old_state = {k: v for k, v in state.items() if k != "warp"}  # states from before warping
    assert Optimizer.from_state_dict(old_state).warp == "none"


def test_bad_warps_are_refused_in_one_line():
    with pytest.raises(SettingError, match="unknown warp 'cubic'"):
        Optimizer(BOX, warp="cubic")
    with pytest.raises(SettingError, match="positive lower bounds"):
        Optimizer([(-1.0, 1.0)], warp="log")
    with pytest.raises(SettingError, match="takes warp 'none'"):
        Optimizer(BOX, acquisition="eign", warp="log")
    with pytest.raises(SettingError, match="known kernel"):
        Optimizer(BOX, warp="learned", known_kernel={"lengthscale": 0.2, "outputscale": 1.0})
    Optimizer([(-1.0, 1.0)], warp="learned")  # the learned warp needs no positive box


def test_no_warp_is_todays_normalize():
    t = make_input_transform("none", BOX)
    assert isinstance(t, Normalize) and not isinstance(t, LogNormalize)
    X = torch.rand(4, 2, dtype=torch.float64)
    assert torch.allclose(t(X), Normalize(d=2, bounds=BOX)(X))
