from __future__ import annotations

import math
import warnings

import pytest
import torch
from botorch.acquisition.analytic import ExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.optim import optimize_acqf
from botorch.utils.sampling import manual_seed
from gpytorch.mlls import ExactMarginalLogLikelihood

from compressbo.bo.acquisition import (
    ACQUISITION_NAMES,
    CorrectedExpectedImprovement,
    CorrectedProbabilityOfImprovement,
    LogCorrectedExpectedImprovement,
    corrected_expected_improvement,
    corrected_improvement_moments,
    is_log_acquisition,
    is_monte_carlo,
    log_corrected_expected_improvement,
    make_acquisition,
)
from compressbo.exceptions import UserInputError
from compressbo.bo.models.gp import fit_gp, incumbent

BOUNDS = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
N_MC = 40_000


def noisy_data(n: int = 12, seed: int = 0, scale: float = 1.0):
    """Branin-like smooth data with heteroscedastic known noise in the box."""
    generator = torch.Generator().manual_seed(seed)
    X = BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * torch.rand(n, 2, generator=generator).double()
    f = scale * (torch.sin(3 * X[:, 0]) + (X[:, 1] - 1.2) ** 2)
    noise_std = scale * (0.02 + 0.1 * X[:, 0])
    Y = f + noise_std * torch.randn(n, generator=generator).double()
    return X, Y, noise_std**2


@pytest.fixture(scope="module")
def fitted():
    X, Y, Yvar = noisy_data()
    return fit_gp(X, Y, Yvar, BOUNDS), X


def candidates(k: int = 6, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(k, 1, 2, generator=generator).double()
    return BOUNDS[0] + (BOUNDS[1] - BOUNDS[0]) * u


def joint_samples(model, X: torch.Tensor, X_other: torch.Tensor, n: int = N_MC):
    """``n x b x (1 + r)`` joint latent samples of ``(f(x_b), f(X_other))`` per candidate."""
    pairs = torch.cat([X, X_other.expand(X.shape[0], *X_other.shape)], dim=-2)
    with torch.no_grad(), manual_seed(0):
        return model.posterior(pairs).rsample(torch.Size([n])).squeeze(-1)


def within_standard_errors(value, samples, k: float = 4.0) -> bool:
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    return bool(torch.all((value - mean).abs() <= k * se + 1e-10))


# ----------------------------------------------------------------- EI family


def test_ei_is_botorch_ei_at_the_lowest_posterior_mean(fitted):
    model, X = fitted
    X_test = candidates()
    with torch.no_grad():
        mu_plus = model.posterior(X).mean.min()
        ours = make_acquisition("ei", model, X)(X_test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = ExpectedImprovement(model, best_f=mu_plus, maximize=False)(X_test)
        F = joint_samples(model, X_test, X[:0])[..., 0]
    assert torch.allclose(ours, reference, rtol=1e-12, atol=0)
    assert within_standard_errors(ours, (mu_plus - F).clamp_min(0))


def test_cei_and_cpi_match_monte_carlo_over_the_joint_posterior(fitted):
    model, X = fitted
    x_plus = incumbent(model, X)
    # random candidates plus points close to the incumbent, where correlation matters
    X_test = torch.cat([candidates(), x_plus.unsqueeze(0) + torch.tensor([[[0.03, -0.05]]])])
    with torch.no_grad():
        cei = CorrectedExpectedImprovement(model, x_plus)(X_test)
        cpi = CorrectedProbabilityOfImprovement(model, x_plus)(X_test)
    samples = joint_samples(model, X_test, x_plus)
    D = samples[..., 1] - samples[..., 0]  # f(x+) - f(x)
    assert cei.shape == cpi.shape == (X_test.shape[0],)
    assert torch.all(cei > 0)
    assert within_standard_errors(cei, D.clamp_min(0))
    assert within_standard_errors(cpi, (D > 0).double())
    with torch.no_grad():
        cpi_margin = CorrectedProbabilityOfImprovement(model, x_plus, xi=0.05)(X_test)
    assert within_standard_errors(cpi_margin, (D > 0.05).double())
    assert torch.all(cpi_margin < cpi)


def _cpi_proposals_at_the_incumbent(options: dict) -> int:
    from compressbo.bo.optimizer import Optimizer
    from compressbo.experiments.problems import make_problem

    problem, noise = make_problem("hartmann3"), torch.Generator().manual_seed(0)
    opt = Optimizer(problem.bounds, "cpi", seed=0, acquisition_options=options, num_restarts=4, raw_samples=128)
    repeats = 0
    for _ in range(12):
        x = opt.ask()
        if opt.last_acquisition_value is not None:
            scaled = (x - opt.recommend().x) / (problem.bounds[1] - problem.bounds[0])
            repeats += int(scaled.abs().max() < 1e-3)
        opt.tell(x, *problem.evaluate(x, noise))
    return repeats


def test_cpi_margin_keeps_proposals_off_the_incumbent(fitted):
    """Without a margin CPI's supremum sits at x+ and the maximizer re-proposes it every
    step; with the default margin CPI vanishes there and no proposal repeats x+."""
    model, X = fitted
    x_plus = incumbent(model, X)
    with torch.no_grad():
        assert make_acquisition("cpi", model, X)(x_plus.unsqueeze(0)).item() < 1e-3
    assert _cpi_proposals_at_the_incumbent({"xi": 0.0}) >= 4  # of 6 BO steps
    assert _cpi_proposals_at_the_incumbent({}) == 0
    with pytest.raises(UserInputError, match="margin"):
        CorrectedProbabilityOfImprovement(model, x_plus, xi=-1.0)


def test_cei_batch_is_one_two_by_two_posterior_per_candidate(fitted):
    model, X = fitted
    cei = CorrectedExpectedImprovement(model, incumbent(model, X))
    X_test = candidates(k=9)
    with torch.no_grad():
        batched = cei(X_test)
        one_by_one = torch.cat([cei(x.unsqueeze(0)) for x in X_test])
        nested = cei(X_test.reshape(3, 3, 1, 2))
    assert torch.allclose(batched, one_by_one, rtol=1e-10)
    assert nested.shape == (3, 3) and torch.allclose(nested.reshape(-1), batched, rtol=1e-10)


def test_cei_equals_ei_when_the_incumbent_is_noise_free():
    X, Y, Yvar = noisy_data(n=10)
    best = int(Y.argmin())
    Y, Yvar = Y.clone(), Yvar.clone()
    Y[best] -= 0.05  # a clear incumbent ...
    Yvar[best] = 1e-6  # ... observed with GPyTorch's smallest noise: f(x+) is known
    model = SingleTaskGP(
        X, Y.unsqueeze(-1), Yvar.unsqueeze(-1), input_transform=Normalize(2, bounds=BOUNDS)
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    x_plus = incumbent(model, X)
    assert torch.equal(x_plus[0], X[best])
    X_test = candidates(k=20)
    with torch.no_grad():
        s_plus = model.posterior(x_plus).variance.sqrt().item()
        cei = CorrectedExpectedImprovement(model, x_plus)(X_test)
        ei = make_acquisition("ei", model, X)(X_test)
    assert s_plus < 2e-3
    # st lies in [|s - s+|, s + s+] and d CEI / d st = phi <= 0.4, hence this bound:
    assert torch.all((cei - ei).abs() <= 0.4 * s_plus + 1e-12)
    assert ei.max() > 10 * 0.4 * s_plus  # the bound is tight relative to the values
    # and exactly, when the joint covariance says s(x+) = k(x, x+) = 0:
    m, st = corrected_improvement_moments(
        torch.tensor([[0.3, 0.1]], dtype=torch.float64),
        torch.tensor([[[0.04, 0.0], [0.0, 0.0]]], dtype=torch.float64),
    )
    assert st.item() == pytest.approx(0.2, rel=1e-15)
    z = (0.1 - 0.3) / 0.2
    pdf, cdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi), 0.5 * math.erfc(-z / math.sqrt(2))
    ei_exact = 0.2 * (pdf + z * cdf)
    assert corrected_expected_improvement(m, st).item() == pytest.approx(ei_exact, rel=1e-12)


def test_cei_vanishes_at_the_incumbent_while_ei_does_not(fitted):
    model, X = fitted
    x_plus = incumbent(model, X)
    with torch.no_grad():
        cei = CorrectedExpectedImprovement(model, x_plus)(x_plus.unsqueeze(0))
        ei = make_acquisition("ei", model, X)(x_plus.unsqueeze(0))
    assert 0 <= cei.item() < 1e-6  # POSTERIOR_STD_FLOOR * h(0)
    assert ei.item() > 1e3 * cei.item()


def test_exp_logcei_equals_cei_where_representable(fitted):
    model, X = fitted
    x_plus = incumbent(model, X)
    X_test = candidates(k=64, seed=3)
    with torch.no_grad():
        cei = CorrectedExpectedImprovement(model, x_plus)(X_test)
        log_cei = LogCorrectedExpectedImprovement(model, x_plus)(X_test)
    assert torch.all(cei > 1e-300)
    assert torch.allclose(log_cei.exp(), cei, rtol=1e-9, atol=0)


@pytest.mark.parametrize("z", [-40.0, -1e3])
def test_logcei_is_finite_with_finite_gradients_where_cei_underflows(z):
    st = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(z * 0.3, dtype=torch.float64, requires_grad=True)
    assert corrected_expected_improvement(m, st).item() == 0.0  # underflow
    log_value = log_corrected_expected_improvement(m, st)
    grad_m, grad_st = torch.autograd.grad(log_value, (m, st))
    # asymptotics: log h(z) = log phi(z) - 2 log|z| + O(z^-2)
    expected = -z * z / 2 - 0.5 * math.log(2 * math.pi) - 2 * math.log(-z) + math.log(0.3)
    assert math.isfinite(log_value.item())
    assert log_value.item() == pytest.approx(expected, rel=1e-3)
    assert math.isfinite(grad_m.item()) and grad_m.item() > 0  # larger m is better
    assert math.isfinite(grad_st.item()) and grad_st.item() > 0  # more spread is better


def test_logcei_class_stays_finite_in_the_far_tail():
    X, Y, _ = noisy_data(n=10)
    model = fit_gp(X, Y, torch.zeros_like(Y), BOUNDS)  # floored noise: tiny st
    x_plus = incumbent(model, X)
    with torch.no_grad():
        worst = X[model.posterior(X).mean.squeeze(-1).argmax()]
    X_test = worst.reshape(1, 1, 2).clone().requires_grad_(True)
    cei = CorrectedExpectedImprovement(model, x_plus)(X_test)
    log_cei = LogCorrectedExpectedImprovement(model, x_plus)(X_test)
    (grad,) = torch.autograd.grad(log_cei.sum(), X_test)
    assert cei.item() == 0.0
    assert math.isfinite(log_cei.item()) and log_cei.item() < -700
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ----------------------------------------------------------------- noisy EI, KG


def test_nei_and_qlognei_match_monte_carlo_of_improvement_over_the_baseline():
    X, Y, Yvar = noisy_data(n=8, scale=100.0)  # large scale: qLogNEI's smoothing is negligible
    model = fit_gp(X, Y, Yvar, BOUNDS)
    X_test = candidates(k=4, seed=5)
    with manual_seed(0):
        nei = make_acquisition("nei", model, X, num_fantasies=512)
        qlognei = make_acquisition("qlognei", model, X)
    with torch.no_grad():
        nei_values, qnei_values = nei(X_test), qlognei(X_test).exp()
    samples = joint_samples(model, X_test, X)
    improvement = (samples[..., 1:].amin(-1) - samples[..., 0]).clamp_min(0)
    mc = improvement.mean(0)
    assert torch.all(mc > 0.5)
    # NEI: 512 QMC fantasies; qLogNEI: 512 QMC samples with its smoothing
    assert torch.allclose(nei_values, mc, rtol=0.05)
    assert torch.allclose(qnei_values, mc, rtol=0.1)


def test_kg_is_positive_after_optimization(fitted):
    # KG >= 0 holds for the exact inner maximization; the one-shot estimate gets there
    # with enough restarts (with 2 restarts it can end slightly below 0).
    model, X = fitted
    with manual_seed(0):
        kg = make_acquisition("kg", model, X, num_fantasies=16)
        candidate, value = optimize_acqf(kg, BOUNDS, q=1, num_restarts=10, raw_samples=128)
    assert candidate.shape == (1, 2)
    assert torch.all(candidate >= BOUNDS[0]) and torch.all(candidate <= BOUNDS[1])
    assert value.item() > 0


# ----------------------------------------------------------------- the registry


REQUIRED_OPTIONS = {"erm": {"f_star": -1.5}, "cbm": {"f_star": -1.5}}


@pytest.mark.parametrize("name", [n for n in ACQUISITION_NAMES if n not in ("kg", "random")])
def test_every_name_optimizes_to_an_in_bounds_candidate(name, fitted):
    # kg: test_kg_is_positive_after_optimization (one-shot KG is slow to optimize);
    # random has no acquisition function: tests/test_optimizer.py
    model, X = fitted
    acquisition = make_acquisition(name, model, X, **REQUIRED_OPTIONS.get(name, {}))
    with manual_seed(0), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy line-search retries
        candidate, value = optimize_acqf(
            acquisition, BOUNDS, q=1, num_restarts=2, raw_samples=32
        )
    assert candidate.shape == (1, 2)
    assert torch.all(candidate >= BOUNDS[0]) and torch.all(candidate <= BOUNDS[1])
    assert math.isfinite(value.item())


def test_unknown_name_lists_the_valid_names(fitted):
    model, X = fitted
    with pytest.raises(ValueError, match="unknown acquisition 'eix'.*cei.*qlognei"):
        make_acquisition("eix", model, X)


def test_random_has_no_acquisition_function(fitted):
    model, X = fitted
    with pytest.raises(UserInputError, match="Sobol.*Optimizer\\(acquisition='random'\\)"):
        make_acquisition("random", model, X)


def test_analytic_acquisitions_reject_x_pending(fitted):
    model, X = fitted
    with pytest.raises(UserInputError, match="X_pending.*condition_on_pending"):
        make_acquisition("cei", model, X, X_pending=X[:1])
    with pytest.raises(UserInputError, match="beta"):
        make_acquisition("ei", model, X, beta=2.0)


def test_log_and_monte_carlo_flags():
    assert {n for n in ACQUISITION_NAMES if is_log_acquisition(n)} == {"logei", "logcei", "qlognei"}
    assert {n for n in ACQUISITION_NAMES if is_monte_carlo(n)} == {"qlognei", "kg"}
    with pytest.raises(ValueError, match="unknown acquisition"):
        is_log_acquisition("nope")


def test_ucb_is_negated_lower_confidence_bound(fitted):
    model, X = fitted
    X_test = candidates()
    with torch.no_grad():
        value = make_acquisition("ucb", model, X, beta=4.0)(X_test)
        posterior = model.posterior(X_test)
    lcb = posterior.mean.reshape(-1) - 2.0 * posterior.variance.sqrt().reshape(-1)
    assert torch.allclose(value, -lcb, rtol=1e-10)


# ----------------------------------------------------------------- random search


def test_random_proposes_the_sobol_sequence_throughout_without_a_gp():
    from torch.quasirandom import SobolEngine

    from compressbo.bo.optimizer import Optimizer

    optimizer = Optimizer(BOUNDS, acquisition="random", n_init=3, seed=4)
    points = []
    for step in range(6):
        x = optimizer.ask()
        assert optimizer.last_acquisition_value is None
        points.append(x)
        optimizer.tell(x, float(x.sum()) + 0.01 * step, 1e-4)
        if step == 4:
            state = optimizer.state_dict()
    assert optimizer._model is None  # no GP was fitted to propose
    unit = SobolEngine(2, scramble=True, seed=4).draw(6, dtype=torch.float64)
    expected = BOUNDS[0] + unit * (BOUNDS[1] - BOUNDS[0])
    assert torch.allclose(torch.stack(points), expected, rtol=0, atol=1e-12)
    assert torch.equal(Optimizer.from_state_dict(state).ask(), points[5])  # resumable
    assert not optimizer.should_stop
