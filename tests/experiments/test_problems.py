from __future__ import annotations

import pickle

import pytest
import torch
from botorch.test_functions import Griewank, Hartmann, Levy, Powell
from torch.quasirandom import SobolEngine

from compressbo.exceptions import UserInputError
from compressbo.experiments.problems import (
    NOISE_FRACTION,
    PROBLEM_NAMES,
    GPSampleFamily,
    GPSampleProblem,
    NoisySyntheticProblem,
    Problem,
    ProblemFamily,
    is_synthetic,
    make_problem,
)


NAMES = ["hartmann3", "griewank4", "levy4", "powell4"]


def _points(problem: NoisySyntheticProblem, n: int, seed: int = 123) -> torch.Tensor:
    lower, upper = problem.bounds
    unit = SobolEngine(problem.dim, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return lower + (upper - lower) * unit


@pytest.mark.parametrize("name", NAMES)
def test_noise_std_is_at_most_ten_percent_of_range_and_varies(name: str) -> None:
    problem = make_problem(name)
    X = _points(problem, 4096)
    values = problem.true_value(X)
    sigma = problem.noise_std(X)
    # The range estimate is never above what an independent sample sees, up to Sobol luck.
    sample_range = float(values.max()) - problem.optimal_value
    assert problem.function_range == pytest.approx(sample_range, rel=0.15)
    assert float(sigma.max()) <= NOISE_FRACTION * problem.function_range + 1e-12
    corners = problem.noise_std(problem.bounds)
    assert float(corners[1] / corners[0]) == pytest.approx(10.0)
    assert float(sigma.std()) > 0.05 * float(sigma.mean())


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_returns_true_variance_and_gaussian_noise(name: str) -> None:
    problem = make_problem(name)
    x = _points(problem, 1)[0]
    generator = torch.Generator().manual_seed(0)
    draws = [problem.evaluate(x, generator) for _ in range(4000)]
    ys = torch.tensor([y for y, _ in draws], dtype=torch.float64)
    sigma = float(problem.noise_std(x))
    # The reported variance is sigma(x)^2 at every call, never the realized squared noise.
    assert all(yvar == pytest.approx(sigma**2, rel=1e-12) for _, yvar in draws)
    residual = ys - float(problem.true_value(x))
    standard_error = sigma / len(ys) ** 0.5
    assert abs(float(residual.mean())) < 4 * standard_error
    assert float(residual.std()) == pytest.approx(sigma, rel=0.05)


def test_same_generator_seed_gives_same_observations() -> None:
    problem = make_problem("levy4")
    x = _points(problem, 1)[0]
    first = [problem.evaluate(x, torch.Generator().manual_seed(7)) for _ in range(3)]
    second = [problem.evaluate(x, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert first == second
    generator = torch.Generator().manual_seed(7)
    assert problem.evaluate(x, generator) != problem.evaluate(x, generator)


@pytest.mark.parametrize(
    "name, cls, dim", [("hartmann3", Hartmann, 3), ("griewank5", Griewank, 5),
                       ("levy4", Levy, 4), ("powell8", Powell, 8)],
)
def test_optimal_values_bounds_and_regret_match_botorch(name: str, cls: type, dim: int) -> None:
    problem = make_problem(name)
    reference = cls(dim=dim)
    assert isinstance(problem, Problem)
    assert problem.name == name and problem.dim == dim
    assert problem.optimal_value == pytest.approx(reference.optimal_value, abs=1e-5)
    assert torch.equal(problem.bounds, reference.bounds.to(torch.float64))
    assert problem.bounds.dtype == torch.float64
    optimizer = reference.optimizers[0].to(torch.float64)
    assert 0.0 <= problem.score(optimizer) < 1e-6
    X = _points(problem, 256)
    regrets = torch.tensor([problem.score(x) for x in X], dtype=torch.float64)
    assert torch.allclose(regrets, reference.evaluate_true(X) - problem.optimal_value)
    assert bool((regrets >= 0).all())


def test_name_and_dimension_parsing() -> None:
    assert make_problem("levy", dim=6).name == "levy6"
    assert make_problem("Hartmann").name == "hartmann3"
    assert make_problem("griewank").dim == 4
    assert make_problem("powell4", dim=4).dim == 4
    assert set(PROBLEM_NAMES) == {"hartmann", "griewank", "levy", "powell"}


@pytest.mark.parametrize(
    "name, dim, match",
    [
        ("rosenbrock", None, "unknown problem 'rosenbrock'; choose one of hartmann, griewank"),
        ("hartmann4", None, "hartmann has dimension 3 or 6"),
        ("powell6", None, "multiple of 4"),
        ("levy3", 5, "dimension 3 but dim is 5"),
        ("levy", 0, "at least 1"),
    ],
)
def test_bad_names_and_dimensions_raise_user_input_error(
    name: str, dim: int | None, match: str
) -> None:
    with pytest.raises(UserInputError, match=match):
        make_problem(name, dim)


def test_problem_pickles_for_worker_processes() -> None:
    problem = make_problem("hartmann3")
    clone = pickle.loads(pickle.dumps(problem))
    x = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    assert clone.evaluate(x, torch.Generator().manual_seed(1)) == problem.evaluate(
        x, torch.Generator().manual_seed(1)
    )
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        problem.evaluate(torch.zeros(2), torch.Generator())


def test_gp_samples_are_reproducible_per_seed_and_differ_across_seeds() -> None:
    X = _points(GPSampleProblem(0, dim=2), 64)
    first, again, other = GPSampleProblem(5, dim=2), GPSampleProblem(5, dim=2), GPSampleProblem(6, dim=2)
    assert torch.equal(first.true_value(X), again.true_value(X))
    assert not torch.allclose(first.true_value(X), other.true_value(X))
    family = GPSampleFamily(dim=2)
    assert torch.equal(family.for_seed(5).true_value(X), first.true_value(X))
    assert isinstance(family, ProblemFamily) and not isinstance(family, Problem)
    assert isinstance(first, Problem)
    y1, yvar = first.evaluate(X[0], torch.Generator().manual_seed(1))
    y2, _ = again.evaluate(X[0], torch.Generator().manual_seed(1))
    assert y1 == y2 and yvar == pytest.approx(0.1**2)


def test_gp_sample_covariance_matches_the_squared_exponential_kernel() -> None:
    """Over many draws, Cov(f(x), f(x')) = s^2 exp(-|x - x'|^2 / (2 l^2)) (Monte Carlo)."""
    lengthscale, outputscale = 0.2, 2.0
    x = torch.tensor([[0.3, 0.4], [0.3, 0.4], [0.45, 0.5], [0.9, 0.1]], dtype=torch.float64)
    draws = torch.stack(
        [GPSampleProblem(i, 2, lengthscale, outputscale, features=512).true_value(x) for i in range(3000)]
    )  # 3000 x 4
    empirical = (draws[:, :1] * draws).mean(0)  # E[f(x0) f(x_j)], the mean is 0
    distance2 = ((x - x[0]) ** 2).sum(-1)
    expected = outputscale * torch.exp(-distance2 / (2 * lengthscale**2))
    # Monte Carlo standard error of E[f f'] is about s^2 sqrt(2 / 3000) = 0.05
    torch.testing.assert_close(empirical, expected, atol=0.16, rtol=0)
    assert abs(float(draws.mean())) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gp_sample_minimum_is_below_every_sobol_sample(seed: int) -> None:
    problem = GPSampleProblem(seed, dim=2)
    X = _points(problem, 2**13, seed=1000 + seed)  # independent of the search's Sobol points
    assert problem.optimal_value <= float(problem.true_value(X).min())
    assert problem.score(problem.minimizer) == pytest.approx(0.0, abs=1e-12)
    assert bool(((problem.minimizer >= 0) & (problem.minimizer <= 1)).all())
    assert problem.known_kernel == {"lengthscale": 0.2, "outputscale": 1.0}


def test_synthetic_names_are_recognized() -> None:
    assert is_synthetic("levy") and is_synthetic("Hartmann6")
    assert not is_synthetic("fc3") and not is_synthetic("gpsample") and not is_synthetic("x/y.toml")
    with pytest.raises(UserInputError, match="lengthscale > 0"):
        GPSampleFamily(dim=2, lengthscale=0.0)


@pytest.mark.parametrize("name, fraction", [("hartmann3", 0.05), ("levy4", 0.1)])
def test_homoscedastic_noise_std_is_the_fraction_of_the_range(name: str, fraction: float) -> None:
    problem = make_problem(name, noise=f"homo:{fraction}")
    X = _points(problem, 64)
    expected = fraction * problem.function_range
    assert torch.allclose(problem.noise_std(X), torch.full((64,), expected, dtype=torch.float64))
    for x in X[:2]:  # Monte Carlo: the realized noise has that std; the GP gets its square
        generator = torch.Generator().manual_seed(1)
        draws = [problem.evaluate(x, generator) for _ in range(4000)]
        residual = torch.tensor([y for y, _ in draws], dtype=torch.float64) - float(problem.true_value(x))
        assert float(residual.std()) == pytest.approx(expected, rel=0.05)
        assert abs(float(residual.mean())) < 4 * expected / len(draws) ** 0.5
        assert all(yvar == pytest.approx(expected**2, rel=1e-12) for _, yvar in draws)
    assert problem.settings == {"noise_fraction": fraction, "noise": "homo"}


def test_noise_specs_default_and_bad_ones() -> None:
    from compressbo.exceptions import SettingError
    from compressbo.experiments.problems import parse_noise

    assert parse_noise("hetero") == ("hetero", NOISE_FRACTION)
    assert parse_noise("homo") == ("homo", 0.05)
    assert parse_noise("HOMO:0.2") == ("homo", 0.2)
    # the default keeps the settings comparisons recorded before noise models
    assert make_problem("levy4").settings == make_problem("levy4", noise="hetero:0.1").settings == {"noise_fraction": 0.1}
    for spec, message in [("pink", "unknown noise model 'pink'"), ("homo:x", "fraction of the range"),
                          ("homo:0", "fraction of the range"), ("hetero:2", "fraction of the range")]:  # fmt: skip
        with pytest.raises(SettingError, match=message) as info:
            make_problem("levy4", noise=spec)
        assert "\n" not in str(info.value)
