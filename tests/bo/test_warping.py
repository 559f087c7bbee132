"""Input warpings of the GP: log scale, the learned Kumaraswamy warp and a known scale before it."""

from __future__ import annotations

import math

import pytest
import torch
from botorch.models.transforms.input import Normalize

from compressbo.bo import Optimizer
from compressbo.bo.models.gp import fit_gp, search_bounds, training_data
from compressbo.bo.models.warping import (
    KnownScale,
    KnownScaleWarp,
    LearnedWarp,
    LogNormalize,
    known_scale_of,
    make_input_transform,
    warp_of,
)
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


def _log_scale() -> KnownScale:
    """A known scale that is log x on a grid of knots (what a flat spectrum's log energy looks like)."""
    knots = [torch.linspace(math.log(lo), 0.0, 40).exp().tolist() for lo in BOX[0].tolist()]
    return KnownScale(knots=knots, values=[[math.log(t) for t in row] for row in knots])


def test_known_scale_interpolates_its_knots_and_inverts():
    scale = KnownScale(knots=((0.1, 0.5, 1.0), (0.2, 0.4, 0.6, 1.0)), values=((-3.0, -1.0, 0.0), (-2.0, -1.0, -1.0, 0.0)))
    X = torch.tensor([[0.05, 0.3], [0.3, 0.5], [1.0, 0.8]], dtype=torch.float64)
    expected = torch.tensor([[-3.0, -1.5], [-2.0, -1.0], [0.0, -0.5]], dtype=torch.float64)
    assert torch.allclose(scale(X), expected)  # constant outside the knots, linear between
    assert torch.allclose(scale.inverse(expected)[1:, 0], X[1:, 0])
    assert scale.inverse(expected)[1, 1] == 0.4  # a flat run maps back to its left end
    inside = torch.tensor([[0.05, 0.3], [0.3, 0.5], [0.75, 0.8]], dtype=torch.float64, requires_grad=True)
    scale(inside).sum().backward()  # differentiable: the acquisition's optimizer follows it
    assert torch.allclose(inside.grad, torch.tensor([[0.0, 5.0], [5.0, 0.0], [2.0, 2.5]], dtype=torch.float64))


@pytest.mark.parametrize(
    "knots, values, message",
    [
        (((0.1, 0.1),), ((0.0, 1.0),), "ascending knots"),
        (((0.1, 0.5),), ((1.0, 0.0),), "non-decreasing values"),
        (((0.1, 0.5),), ((0.0, math.inf),), "not finite"),
        (((0.1, 0.5),), ((0.0,),), "2 knots and 1 values"),
    ],
)
def test_a_bad_known_scale_is_refused_in_one_line(knots, values, message):
    with pytest.raises(SettingError, match=message):
        KnownScale(knots=knots, values=values)


def test_known_scale_warp_normalizes_the_box_then_warps():
    scale = _log_scale()
    t = make_input_transform("spectral", BOX, scale)
    assert isinstance(t, KnownScaleWarp) and isinstance(t, LearnedWarp.__mro__[1])  # a BoTorch Warp
    with torch.no_grad():
        Z = t(torch.stack([BOX[0], BOX[1], BOX[0].sqrt() * BOX[1].sqrt()]))
    # before fitting the Kumaraswamy CDF is the identity: the known scale on the box's ends is [0, 1]
    assert torch.allclose(Z, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]], dtype=torch.float64), atol=1e-3)
    X = BOX[0] + torch.rand(5, 2, dtype=torch.float64) * (BOX[1] - BOX[0])
    with torch.no_grad():
        assert torch.allclose(t.untransform(t(X)), X, atol=1e-5)
    # with log x as the scale, the spectral warp before fitting is the log warp
    with torch.no_grad():
        assert torch.allclose(t(X), make_input_transform("log", BOX)(X), atol=1e-3)


def test_known_scale_warp_on_a_coordinate_where_the_scale_is_flat_uses_x_itself():
    scale = KnownScale(knots=((0.5, 1.0), (0.1, 1.0)), values=((0.0, 0.0), (-2.0, 0.0)))
    t = make_input_transform("spectral", BOX, scale)
    X = torch.tensor([[0.2525, 0.1]], dtype=torch.float64)
    with torch.no_grad():
        z = t(X)
    assert torch.allclose(z[0, 0], (X[0, 0] - BOX[0, 0]) / (BOX[1, 0] - BOX[0, 0]), atol=1e-6)


def test_spectral_warp_is_fitted_with_the_gp_and_kept_by_the_optimizer_state():
    X, Y, Yvar = _data(30)
    scale = _log_scale()
    torch.manual_seed(0)
    model = fit_gp(X, Y, Yvar, BOX, warp="spectral", known_scale=scale)
    assert warp_of(model) == "spectral" and known_scale_of(model) is scale
    assert torch.allclose(search_bounds(model), BOX)
    moved = (model.input_transform.concentration0 - 1.0).abs().max()
    assert moved > 1e-3  # the Kumaraswamy concentrations after the scale are fitted by the MLL
    opt = Optimizer(BOX, acquisition="cei", seed=3, warp="spectral", known_scale=scale, n_init=5, num_restarts=2, raw_samples=32)
    for _ in range(6):
        x = opt.ask()
        opt.tell(x, float(_cliff(x)), 1e-3)
    state = opt.state_dict()
    assert state["warp"] == "spectral" and "known_scale" not in state  # plain numbers the problem computes again
    restored = Optimizer.from_state_dict(state, known_scale=scale)
    assert torch.equal(restored.ask(), opt.ask())
    with pytest.raises(SettingError, match="needs a known scale of every coordinate"):
        Optimizer.from_state_dict(state)


@pytest.mark.parametrize("warp", ["log", "spectral"])
def test_a_log_scale_predicts_a_log_scale_function_better_than_no_warp(warp):
    """On held-out points of the low corner, the log-scale GP (or the spectral warp given log x as
    its known scale) predicts what the linear one cannot resolve."""
    X, Y, Yvar = _data(30, seed=1)
    g = torch.Generator().manual_seed(2)
    X_test = (BOX[0].log() + torch.rand(200, 2, generator=g, dtype=torch.float64) * (math.log(0.1) - BOX[0].log())).exp()
    errors = {}
    for name in ("none", warp):
        torch.manual_seed(0)
        model = fit_gp(X, Y, Yvar, BOX, warp=name, known_scale=_log_scale() if name == "spectral" else None)
        with torch.no_grad():
            mean = model.posterior(X_test).mean.reshape(-1)
        errors[name] = (mean - _cliff(X_test)).pow(2).mean().sqrt().item()
    assert errors[warp] < 0.7 * errors["none"], errors


def test_spectral_warp_without_a_known_scale_is_refused_in_one_line():
    with pytest.raises(SettingError, match="warp 'spectral' needs a known scale"):
        Optimizer(BOX, warp="spectral")
    with pytest.raises(SettingError, match="the known scale has 1 coordinates but the box has 2"):
        Optimizer(BOX, warp="spectral", known_scale=KnownScale(knots=((0.1, 1.0),), values=((-1.0, 0.0),)))
