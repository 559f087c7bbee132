from __future__ import annotations

import warnings

import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from linear_operator.utils.errors import NotPSDError

import compressbo.bo.models.gp as gp
from compressbo.exceptions import UserInputError
from compressbo.bo.models.gp import GPFitWarning, condition_on_pending, fit_gp, incumbent

BOUNDS = torch.tensor([[0.0, -1.0], [2.0, 1.0]], dtype=torch.float64)


def quadratic_data(n: int = 20, seed: int = 0, noise_std: float = 0.05):
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    X = BOUNDS[0] + u * (BOUNDS[1] - BOUNDS[0])
    f = ((X - torch.tensor([1.2, 0.3], dtype=torch.float64)) ** 2).sum(-1)
    Y = f + noise_std * torch.randn(n, generator=generator, dtype=torch.float64)
    return X, Y, torch.full_like(Y, noise_std**2), f


def test_fit_gp_builds_a_fitted_float64_fixed_noise_gp():
    X, Y, Yvar, f = quadratic_data()
    model = fit_gp(X, Y, Yvar, BOUNDS)
    assert isinstance(model, SingleTaskGP)
    assert isinstance(model.input_transform, Normalize)
    assert isinstance(model.outcome_transform, Standardize)
    assert model.train_inputs[0].dtype == torch.float64
    assert not model.training
    # Normalize maps the search box to the unit cube.
    assert torch.allclose(model.input_transform(BOUNDS), torch.tensor([[0.0, 0], [1, 1]]).double())
    with torch.no_grad():
        mean = model.posterior(X).mean.squeeze(-1)
    # A fitted smooth GP denoises: its mean is closer to f than the data are.
    assert (mean - f).pow(2).mean() < (Y - f).pow(2).mean()


def test_fit_gp_accepts_column_targets_and_gives_the_same_model():
    X, Y, Yvar, _ = quadratic_data()
    a = fit_gp(X, Y, Yvar, BOUNDS)
    b = fit_gp(X, Y.unsqueeze(-1), Yvar.unsqueeze(-1), BOUNDS)
    with torch.no_grad():
        assert torch.allclose(a.posterior(X).mean, b.posterior(X).mean)


def test_zero_variances_and_duplicate_inputs_are_floored_not_fatal():
    X, Y, Yvar, _ = quadratic_data(n=12)
    X = torch.cat([X, X[:4], X[:4]])  # exact duplicates, three copies of four points
    Y = torch.cat([Y, Y[:4] + 0.01, Y[:4] - 0.01])
    Yvar = torch.zeros_like(Y)  # error rate exactly 0 or 1: zero variance
    with warnings.catch_warnings():
        warnings.simplefilter("error", GPFitWarning)
        model = fit_gp(X, Y, Yvar, BOUNDS)
    noise = model.likelihood.noise  # standardized units
    assert torch.all(noise >= gp.VARIANCE_FLOOR * (1 - 1e-9))
    with torch.no_grad():
        posterior = model.posterior(torch.rand(7, 2, dtype=torch.float64))
    assert torch.isfinite(posterior.mean).all() and torch.all(posterior.variance > 0)


def test_constant_outcomes_fit():
    X, _, _, _ = quadratic_data(n=8)
    model = fit_gp(X, torch.ones(8), torch.zeros(8), BOUNDS)
    with torch.no_grad():
        assert torch.allclose(model.posterior(X).mean, torch.ones(8, 1).double(), atol=1e-3)


def test_failed_fit_warns_and_falls_back(monkeypatch):
    calls = []

    def failing_fit(mll, **kwargs):
        calls.append(mll)
        raise NotPSDError("matrix not positive definite")

    monkeypatch.setattr(gp, "fit_gpytorch_mll", failing_fit)
    X, Y, Yvar, _ = quadratic_data()
    with pytest.warns(GPFitWarning) as record:
        model = fit_gp(X, Y, Yvar, BOUNDS)
    messages = [str(w.message) for w in record]
    assert len(messages) == 3 and "default hyperparameters" in messages[-1]
    assert len(calls) == 2  # the first floor, then the retry floor
    assert torch.all(model.likelihood.noise >= gp.RETRY_VARIANCE_FLOOR * (1 - 1e-9))
    with torch.no_grad():
        assert torch.isfinite(model.posterior(X).mean).all()


def test_retry_recovers_when_only_the_first_fit_fails(monkeypatch):
    real_fit = gp.fit_gpytorch_mll
    calls = []

    def flaky_fit(mll, **kwargs):
        calls.append(mll)
        if len(calls) == 1:
            raise NotPSDError("matrix not positive definite")
        return real_fit(mll, **kwargs)

    monkeypatch.setattr(gp, "fit_gpytorch_mll", flaky_fit)
    X, Y, Yvar, _ = quadratic_data()
    with pytest.warns(GPFitWarning, match="recovering") as record:
        fit_gp(X, Y, Yvar, BOUNDS)
    assert not any("default hyperparameters" in str(w.message) for w in record)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "X, Y, Yvar, bounds, match",
    [
        (torch.rand(5, 2), torch.rand(4), torch.rand(5), BOUNDS, "5 values"),
        (torch.rand(5, 2), torch.rand(5), -torch.rand(5), BOUNDS, ">= 0"),
        (torch.rand(5, 2), torch.tensor([0, 1, float("nan"), 0, 1]), torch.rand(5), BOUNDS, "NaN"),
        (torch.rand(5, 2), torch.rand(5), torch.rand(5), BOUNDS[:, :1], "2 x 2"),
        (torch.rand(5, 2), torch.rand(5), torch.rand(5), BOUNDS.flip(0), "lower < upper"),
        (torch.rand(5), torch.rand(5), torch.rand(5), BOUNDS, "n x d"),
    ],
)
def test_fit_gp_rejects_bad_input(X, Y, Yvar, bounds, match):
    with pytest.raises(UserInputError, match=match):
        fit_gp(X, Y, Yvar, bounds)


def test_incumbent_is_lowest_posterior_mean_not_lowest_noisy_y():
    X, Y, Yvar, f = quadratic_data(n=25, noise_std=0.01)
    # One far-from-optimal point observed very noisily with a lucky, very low value.
    worst = int(f.argmax())
    Y, Yvar = Y.clone(), Yvar.clone()
    Y[worst], Yvar[worst] = f.min() - 1.0, 25.0
    model = fit_gp(X, Y, Yvar, BOUNDS)
    x_plus = incumbent(model, X)
    assert x_plus.shape == (1, 2)
    with torch.no_grad():
        mean = model.posterior(X).mean.squeeze(-1)
    assert torch.equal(x_plus[0], X[mean.argmin()])
    assert not torch.equal(x_plus[0], X[Y.argmin()])  # the noisy minimum is not trusted
    assert f[mean.argmin()] < f.quantile(0.2)


@pytest.mark.parametrize("scale", [1.0, 1e-3])  # the believer's noise is relative to Y's scale
@pytest.mark.parametrize("known_kernel", [False, True])
def test_kriging_believer_keeps_mean_and_collapses_variance(known_kernel, scale):
    X, Y, Yvar, _ = quadratic_data()
    Y, Yvar = scale * Y, scale**2 * Yvar
    if known_kernel:  # no outcome transform: the noise must still be small relative to Y
        model = gp.known_rbf_gp(X, Y.unsqueeze(-1), Yvar.unsqueeze(-1), BOUNDS, 1.0, Y.var().item())
    else:
        model = fit_gp(X, Y, Yvar, BOUNDS)
    pending = torch.tensor([[0.5, 0.5], [1.5, -0.5]], dtype=torch.float64)
    believer = condition_on_pending(model, pending)
    with torch.no_grad():
        before, after = model.posterior(pending), believer.posterior(pending)
    assert torch.allclose(before.mean, after.mean, atol=1e-3 * Y.std())
    assert torch.all(after.variance < 1e-3 * (before.variance + Y.var()))
    assert condition_on_pending(model, torch.empty(0, 2, dtype=torch.float64)) is model


def test_constant_liar_believes_the_lie_at_pending_points():
    X, Y, Yvar, _ = quadratic_data()
    model = fit_gp(X, Y, Yvar, BOUNDS)
    pending = torch.tensor([[1.2, 0.3]], dtype=torch.float64)  # the minimizer of f
    liar = condition_on_pending(model, pending, lie=Y.max().item())
    with torch.no_grad():
        believed, lied = model.posterior(pending).mean.item(), liar.posterior(pending).mean.item()
    assert believed < Y.min().item() + 0.1 * Y.std().item()  # the model knows it is low here
    assert lied == pytest.approx(Y.max().item(), abs=0.01 * Y.std().item())


def test_outcome_scale_is_the_standardized_std_or_the_prior_std():
    X, Y, Yvar, _ = quadratic_data()
    assert gp.outcome_scale(fit_gp(X, Y, Yvar, BOUNDS)) == pytest.approx(Y.std().item())
    known = gp.known_rbf_gp(X, Y.unsqueeze(-1), Yvar.unsqueeze(-1), BOUNDS, 1.0, 0.25)
    assert gp.outcome_scale(known) == pytest.approx(0.5)


def test_matern52_kernel_is_ard_matern_in_a_scale_kernel_with_gamma_priors():
    from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
    from gpytorch.priors import GammaPrior, LogNormalPrior

    X, Y, Yvar, f = quadratic_data()
    model = fit_gp(X, Y, Yvar, BOUNDS, kernel="matern52")
    covar = model.covar_module
    assert isinstance(covar, ScaleKernel) and isinstance(covar.base_kernel, MaternKernel)
    assert covar.base_kernel.nu == 2.5
    assert covar.base_kernel.ard_num_dims == 2
    assert covar.base_kernel.lengthscale.shape == (1, 2)
    lengthscale_prior = covar.base_kernel.lengthscale_prior
    outputscale_prior = covar.outputscale_prior
    assert isinstance(lengthscale_prior, GammaPrior) and isinstance(outputscale_prior, GammaPrior)
    assert (lengthscale_prior.concentration.item(), lengthscale_prior.rate.item()) == (3.0, 6.0)
    assert (outputscale_prior.concentration.item(), outputscale_prior.rate.item()) == pytest.approx((2.0, 0.15))
    assert covar.outputscale.dtype == torch.float64
    assert gp.kernel_name(model) == "matern52"
    with torch.no_grad():
        mean = model.posterior(X).mean.squeeze(-1)
    assert (mean - f).pow(2).mean() < (Y - f).pow(2).mean()  # fitted, it denoises
    # the default stays BoTorch's: ARD RBF with the dimension-scaled log-normal prior
    default = fit_gp(X, Y, Yvar, BOUNDS)
    assert isinstance(default.covar_module, RBFKernel)
    assert isinstance(default.covar_module.lengthscale_prior, LogNormalPrior)
    assert gp.kernel_name(default) == "rbf"


def test_the_rbf_kernel_is_botorchs_own_default():
    X, Y, Yvar, _ = quadratic_data()
    ours = fit_gp(X, Y, Yvar, BOUNDS, kernel="rbf")
    theirs = SingleTaskGP(
        X, Y.unsqueeze(-1), Yvar.unsqueeze(-1).clamp_min(gp.VARIANCE_FLOOR * Y.var().item()),
        input_transform=Normalize(d=2, bounds=BOUNDS), outcome_transform=Standardize(m=1),
    )  # fmt: skip
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    fit_gpytorch_mll(ExactMarginalLogLikelihood(theirs.likelihood, theirs))
    assert type(ours.covar_module) is type(theirs.covar_module)
    assert torch.allclose(ours.covar_module.lengthscale, theirs.covar_module.lengthscale, rtol=1e-6)


def test_unknown_kernel_is_one_clear_error():
    from compressbo.exceptions import SettingError

    X, Y, Yvar, _ = quadratic_data()
    with pytest.raises(SettingError, match="unknown kernel 'matern'; choose one of rbf, matern52"):
        fit_gp(X, Y, Yvar, BOUNDS, kernel="matern")
