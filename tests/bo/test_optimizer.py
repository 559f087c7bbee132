from __future__ import annotations

import json
import math

import pytest
import torch
from torch.quasirandom import SobolEngine

from compressbo.exceptions import UserInputError
from compressbo.bo.optimizer import Optimizer, Recommendation

BOUNDS = [(-2.0, 2.0), (0.0, 1.0)]
OPTIMUM = torch.tensor([0.7, 0.35], dtype=torch.float64)
FAST = {"num_restarts": 3, "raw_samples": 64}  # the properties below do not need more


def quadratic(x: torch.Tensor) -> float:
    return float((((x - OPTIMUM) / torch.tensor([4.0, 1.0])) ** 2).sum() * 10)


def noise_var(x: torch.Tensor) -> float:
    """Heteroscedastic: noisier on the right half of the box."""
    return 0.01 * (1.0 + 3.0 * float(x[0] > 0))


def observe(optimizer: Optimizer, x: torch.Tensor, step: int) -> None:
    generator = torch.Generator().manual_seed(1000 + step)
    var = noise_var(x)
    noise = torch.randn(1, generator=generator, dtype=torch.float64).item()
    y = quadratic(x) + math.sqrt(var) * noise
    optimizer.tell(x, y, var)


def run(optimizer: Optimizer, steps: int) -> list[float | None]:
    values = []
    for step in range(steps):
        x = optimizer.ask()
        values.append(optimizer.last_acquisition_value)
        observe(optimizer, x, step)
    return values


def test_initial_design_is_scrambled_sobol_in_the_box():
    optimizer = Optimizer([(0.0, 1.0), (-1.0, 1.0), (5.0, 6.0)], seed=3)
    assert optimizer.n_init == 6  # max(5, 2 d)
    first = optimizer.ask()
    rest = optimizer.ask(5)
    assert first.shape == (3,) and rest.shape == (5, 3)
    assert optimizer.last_acquisition_value is None and not optimizer.should_stop
    design = torch.cat([first.unsqueeze(0), rest])
    unit = SobolEngine(3, scramble=True, seed=3).draw(6, dtype=torch.float64)
    lower, upper = optimizer.bounds
    assert torch.allclose(design, lower + unit * (upper - lower), rtol=0, atol=1e-12)
    assert torch.all(design >= lower) and torch.all(design <= upper)
    assert optimizer.pending.shape == (6, 3) and optimizer.n_observed == 0


def test_default_n_init_and_tensor_bounds():
    assert Optimizer(torch.tensor([[0.0, 0.0], [1.0, 1.0]])).n_init == 5
    assert Optimizer([(0, 1)] * 4).n_init == 8
    assert Optimizer([(0, 1)] * 4, n_init=3).n_init == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bounds": [(1.0, 0.0)]}, "lower < upper"),
        ({"bounds": torch.zeros(3, 2)}, "2 x d"),
        ({"bounds": "box"}, "pairs"),
        ({"bounds": BOUNDS, "acquisition": "eii"}, "unknown acquisition 'eii'.*cei"),
        ({"bounds": BOUNDS, "kappa": -1.0}, "kappa"),
        ({"bounds": BOUNDS, "n_init": 0}, "n_init"),
        ({"bounds": BOUNDS, "acquisition_options": {"X_pending": None}}, "X_pending"),
        ({"bounds": BOUNDS, "num_restarts": 20, "raw_samples": 10}, "raw_samples"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        Optimizer(**kwargs)


@pytest.mark.parametrize(
    "x, y, yvar, match",
    [
        ([0.0], 1.0, 0.1, "2 values"),
        ([0.0, 2.0], 1.0, 0.1, "outside the search box"),
        ([float("nan"), 0.5], 1.0, 0.1, "NaN"),
        ([0.0, 0.5], float("inf"), 0.1, "y must be finite"),
        ([0.0, 0.5], 1.0, -0.1, "yvar must be >= 0"),
        ([0.0, 0.5], "one", 0.1, "y must be a number"),
    ],
)
def test_tell_rejects_bad_observations(x, y, yvar, match):
    with pytest.raises(UserInputError, match=match):
        Optimizer(BOUNDS).tell(x, y, yvar)


def test_ask_and_recommend_reject_misuse():
    optimizer = Optimizer(BOUNDS)
    with pytest.raises(UserInputError, match="positive integer"):
        optimizer.ask(0)
    with pytest.raises(UserInputError, match="tell"):
        optimizer.recommend()


def test_tell_removes_the_pending_point():
    optimizer = Optimizer(BOUNDS, seed=1)
    batch = optimizer.ask(3)
    optimizer.tell(batch[1].tolist(), 0.5, 0.01)  # a list works as well as a tensor
    assert optimizer.pending.shape == (2, 2)
    assert torch.equal(optimizer.pending, batch[[0, 2]])
    optimizer.tell([0.0, 0.5], 0.1, 0.0)  # a point never asked is just recorded
    assert optimizer.n_observed == 2 and optimizer.pending.shape == (2, 2)
    assert torch.equal(optimizer.Y, torch.tensor([0.5, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("acquisition", ["cei", "ei", "qlognei", "cbm", "erm"])
def test_pending_points_are_accounted_for_and_never_duplicated(acquisition):
    options = {"f_star": -1.0} if acquisition in ("cbm", "erm") else {}
    optimizer = Optimizer(
        BOUNDS, acquisition=acquisition, seed=0, acquisition_options=options, **FAST
    )
    run(optimizer, 6)
    lone = Optimizer.from_state_dict(optimizer.state_dict()).ask()
    batch = optimizer.ask(3)
    assert batch.shape == (3, 2) and optimizer.pending.shape == (3, 2)
    assert torch.equal(batch[0], lone)  # the first point sees no pending points
    scale = torch.tensor([4.0, 1.0], dtype=torch.float64)
    for i in range(3):
        for j in range(i):
            assert ((batch[i] - batch[j]) / scale).abs().max() > 1e-3
    lower, upper = optimizer.bounds
    assert torch.all(batch >= lower) and torch.all(batch <= upper)
    assert optimizer.last_acquisition_value is not None


def test_when_every_restart_lands_on_a_pending_point_a_sobol_point_gets_its_own_value(monkeypatch):
    import compressbo.bo.optimizer as module

    optimizer = Optimizer(BOUNDS, acquisition="cei", seed=0, **FAST)
    run(optimizer, 6)
    pending = optimizer.ask()
    fake_value = 1e6  # what the restarts report at the pending point

    def all_on_pending(acquisition, bounds, q, num_restarts, raw_samples, return_best_only):
        candidates = pending.reshape(1, 1, -1).expand(num_restarts, 1, -1).clone()
        return candidates, torch.full((num_restarts,), fake_value, dtype=torch.float64)

    monkeypatch.setattr(module, "optimize_acqf", all_on_pending)
    x = optimizer.ask()
    lower, upper = optimizer.bounds
    assert not torch.equal(x, pending) and torch.all(x >= lower) and torch.all(x <= upper)
    value = optimizer.last_acquisition_value
    assert value is not None and 0 <= value < fake_value  # CEI at the Sobol point, not the restarts' value


@pytest.mark.parametrize("acquisition", ["cei", "logcei"])
def test_kappa_stops_at_the_first_proposal_below_kappa(acquisition):
    reference = Optimizer(BOUNDS, acquisition=acquisition, n_init=4, seed=2, **FAST)
    values = run(reference, 12)[4:]  # BO proposals only
    assert all(v is not None for v in values)
    # a later proposal that sets a new running minimum: the stop must wait for it
    j = next(j for j in range(2, len(values)) if values[j] < min(values[:j]))
    threshold = (values[j] + min(values[:j])) / 2
    kappa = math.exp(threshold) if acquisition == "logcei" else threshold
    optimizer = Optimizer(BOUNDS, acquisition=acquisition, n_init=4, seed=2, kappa=kappa, **FAST)
    stops = []
    for step in range(4 + j + 1):
        x = optimizer.ask()
        stops.append(optimizer.should_stop)
        observe(optimizer, x, step)
    assert stops == [False] * (4 + j) + [True]
    assert optimizer.last_acquisition_value == pytest.approx(values[j])


@pytest.mark.parametrize("acquisition", ["ucb", "pi", "random"])
def test_kappa_is_refused_where_the_acquisition_does_not_vanish(acquisition):
    with pytest.raises(UserInputError, match="kappa does not apply.*does not fall to 0"):
        Optimizer(BOUNDS, acquisition=acquisition, kappa=1e-3)


@pytest.mark.parametrize("steps", [2, 7])  # in the Sobol phase, and in the BO phase
def test_state_dict_json_round_trip_proposes_the_same_next_point(steps):
    optimizer = Optimizer(BOUNDS, acquisition="cei", seed=5, kappa=1e-4, **FAST)
    run(optimizer, steps)
    optimizer.ask()  # leave one pending point in the state
    state = json.loads(json.dumps(optimizer.state_dict()))
    restored = Optimizer.from_state_dict(state)
    loaded = Optimizer([(0.0, 1.0)])
    loaded.load_state_dict(state)
    expected = optimizer.ask(2)
    assert torch.equal(restored.ask(2), expected)
    assert torch.equal(loaded.ask(2), expected)
    assert restored.last_acquisition_value == optimizer.last_acquisition_value
    assert torch.equal(restored.pending, optimizer.pending)
    assert restored.state_dict() == optimizer.state_dict()


def test_load_state_dict_rejects_foreign_state():
    with pytest.raises(UserInputError, match="not an optimizer state"):
        Optimizer.from_state_dict({"X": []})


def test_short_noisy_optimization_of_a_quadratic_gets_close():
    optimizer = Optimizer(BOUNDS, acquisition="cei", seed=0, num_restarts=4, raw_samples=128)
    run(optimizer, 22)
    best = optimizer.recommend()
    assert isinstance(best, Recommendation) and best.x.shape == (2,)
    scale = torch.tensor([4.0, 1.0], dtype=torch.float64)
    assert ((best.x - OPTIMUM) / scale).abs().max() < 0.08
    assert abs(best.mean - quadratic(best.x)) < 0.2
    assert 0 < best.std < 0.2


def test_kernel_is_kept_in_the_state_and_used_by_every_fit():
    from gpytorch.kernels import MaternKernel

    from compressbo.exceptions import SettingError

    optimizer = Optimizer(BOUNDS, acquisition="cei", seed=3, kernel="matern52", **FAST)
    run(optimizer, 6)
    optimizer.recommend()
    assert isinstance(optimizer._model.covar_module.base_kernel, MaternKernel)
    state = json.loads(json.dumps(optimizer.state_dict()))
    assert state["kernel"] == "matern52"
    restored = Optimizer.from_state_dict(state)
    assert restored.kernel == "matern52"
    assert torch.equal(restored.ask(), optimizer.ask())
    # a state written before kernels existed restores with the default
    del state["kernel"]
    assert Optimizer.from_state_dict(state).kernel == "rbf"
    with pytest.raises(SettingError, match="unknown kernel"):
        Optimizer(BOUNDS, kernel="periodic")


def test_known_optimum_gp_uses_the_optimizers_kernel():
    from gpytorch.kernels import MaternKernel

    from compressbo.bo.models.known_optimum import fit_transformed_gp

    optimizer = Optimizer(BOUNDS, acquisition="cei", seed=3, kernel="matern52", **FAST)
    run(optimizer, 6)
    g_model = fit_transformed_gp(optimizer._fitted_model(), f_star=0.0)
    assert isinstance(g_model.covar_module.base_kernel, MaternKernel)
