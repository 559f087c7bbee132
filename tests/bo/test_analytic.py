"""The analytic acquisitions' closed-form pieces: the two posterior floors, EI's h and a stable log h."""

from __future__ import annotations

import math

import pytest
import torch
from botorch.utils.sampling import manual_seed

from compressbo.bo.acquisition.analytic import (
    POSTERIOR_STD_FLOOR,
    POSTERIOR_VARIANCE_FLOOR,
    ei_h,
    log_ei_h,
    normal_cdf,
    normal_pdf,
)
from compressbo.bo.acquisition.corrected import corrected_expected_improvement, corrected_improvement_moments
from compressbo.bo.acquisition.known_optimum import expected_regret

H0 = 1 / math.sqrt(2 * math.pi)  # h(0) = phi(0)


def test_the_variance_floor_and_the_std_floor_are_one_floor_in_two_units() -> None:
    assert POSTERIOR_VARIANCE_FLOOR == 1e-12 and POSTERIOR_STD_FLOOR**2 == POSTERIOR_VARIANCE_FLOOR
    # CEI floors the variance st^2 (a 2x2 covariance whose difference is exactly 0) ...
    mean, covariance = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, 2, dtype=torch.float64)
    m, st = corrected_improvement_moments(mean, covariance)
    assert st.item() == math.sqrt(POSTERIOR_VARIANCE_FLOOR)
    assert math.isclose(corrected_expected_improvement(m, st).item(), POSTERIOR_STD_FLOOR * H0, rel_tol=1e-15)
    # ... ERM floors a standard deviation: the same number in its own units
    regret = expected_regret(torch.tensor([0.3], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 0.3)
    assert math.isclose(regret.item(), POSTERIOR_STD_FLOOR * H0, rel_tol=1e-15)
    st_grad = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    expected_regret(torch.tensor([0.3], dtype=torch.float64), st_grad, 0.3).sum().backward()
    assert torch.isfinite(st_grad.grad).all()


# ------------------------------ EI's h and log h ------------------------------

Z64 = torch.cat([
    -torch.logspace(-3, 100, 600, dtype=torch.float64),  # down to -1e100
    torch.linspace(-40.0, 40.0, 801, dtype=torch.float64),
    torch.tensor([0.0, -1.0, 1.0, -1e6, -1e6 - 1, -1e3], dtype=torch.float64),  # the branch edges
])


def _reference_log_h(z: float) -> float:
    """``log(phi(z) + z Phi(z))`` in arithmetic precise enough for its cancellation (``h ~ phi / z^2``)."""
    import mpmath

    with mpmath.workdps(80 + 2 * int(math.log10(1 + abs(z)))):
        z = mpmath.mpf(z)
        return float(mpmath.log(mpmath.npdf(z) + z * mpmath.ncdf(z)))


def test_log_h_is_accurate_from_minus_1e100_up() -> None:
    zs = [-1e100, -1e20, -1e8, -1e6 - 1, -1e6, -1e3, -50.0, -38.5, -10.0, -1.0 - 1e-12, -1.0, -0.3, 0.0, 0.5, 3.0, 20.0]
    z = torch.tensor(zs, dtype=torch.float64)
    got = log_ei_h(z)
    for value, expected in zip(got.tolist(), (_reference_log_h(v) for v in zs)):
        assert math.isclose(value, expected, rel_tol=1e-10, abs_tol=1e-12), (value, expected)
    # where h is accurate itself (left of -5 phi - |z| Phi cancels), log h is log of it
    moderate = torch.linspace(-5.0, 30.0, 141, dtype=torch.float64)
    assert torch.allclose(log_ei_h(moderate).exp(), ei_h(moderate), rtol=1e-12, atol=0)
    grid = torch.linspace(-12.0, 12.0, 200001, dtype=torch.float64)  # h = E[max(Z + z, 0)] by quadrature
    density = normal_pdf(grid)
    for z0 in (-2.0, 0.0, 1.5):
        quadrature = torch.trapezoid((grid + z0).clamp_min(0) * density, grid)
        assert math.isclose(ei_h(torch.tensor(z0, dtype=torch.float64)).item(), quadrature.item(), rel_tol=1e-8)


def test_log_h_has_finite_exact_gradients_everywhere() -> None:
    z = Z64.clone().requires_grad_(True)
    value = log_ei_h(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all() and (grad > 0).all()
    # d log h / dz = Phi(z) / h(z): check where both are representable
    moderate = (Z64 > -30) & (Z64 < 30)
    assert torch.allclose(grad[moderate], (normal_cdf(Z64) / ei_h(Z64))[moderate], rtol=1e-8)
    # in the tail d log h / dz = -z - 2 / z + 6 / z^3 + ... (log h ~ log phi(z) - 2 log|z|); between
    # -1e6 and -1e5 the Mills-ratio branch loses digits of the small -2 / z (as BoTorch's LogEI does)
    tail = -Z64 - 2 / Z64 + 6 / Z64**3
    assert torch.allclose(grad[Z64 < -1e2], tail[Z64 < -1e2], rtol=1e-3)
    assert torch.allclose(grad[Z64 <= -1e6], tail[Z64 <= -1e6], rtol=1e-12)
    with pytest.raises(TypeError, match="float32 or float64"):
        log_ei_h(torch.tensor([1], dtype=torch.int64))


def test_h_and_log_h_are_botorch_s_own_values_bit_for_bit() -> None:
    """The helpers BoTorch kept private (and compressbo used before): same values, same gradients."""
    analytic = pytest.importorskip("botorch.acquisition.analytic")
    if not hasattr(analytic, "_log_ei_helper"):
        pytest.skip("this BoTorch has no _log_ei_helper to compare with")
    for dtype in (torch.float64, torch.float32):
        z = torch.cat([Z64[Z64 > -1e18], torch.tensor([-1e3 - 1.0])]).to(dtype)
        ours, theirs = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        a, b = log_ei_h(ours), analytic._log_ei_helper(theirs)
        a.sum().backward()
        b.sum().backward()
        assert torch.equal(a, b) and torch.equal(ours.grad, theirs.grad)
        assert torch.equal(ei_h(z), analytic._ei_helper(z))


def test_log_h_and_h_give_botorch_s_public_log_ei_and_ei() -> None:
    """``log h(z) + log sigma`` is ``LogExpectedImprovement``, ``sigma h(z)`` is ``ExpectedImprovement``."""
    from botorch.acquisition.analytic import ExpectedImprovement, LogExpectedImprovement

    from compressbo.bo.models.gp import fit_gp

    generator = torch.Generator().manual_seed(0)
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    X = 0.5 * torch.rand(10, 2, generator=generator, dtype=torch.float64)  # data in a corner
    Y = (X - 0.2).pow(2).sum(-1)
    with manual_seed(0):
        model = fit_gp(X, Y, torch.full_like(Y, 1e-4), bounds)
    candidates = torch.rand(64, 1, 2, generator=generator, dtype=torch.float64)  # near and far
    best_f = Y.min() - 0.5  # far below the data: z down to the tail (a float64 tensor: BoTorch keeps it so)
    with torch.no_grad():
        posterior = model.posterior(candidates)
        mean, sigma = posterior.mean.reshape(-1), posterior.variance.clamp_min(POSTERIOR_VARIANCE_FLOOR).sqrt().reshape(-1)
        z = (best_f - mean) / sigma
        log_ei = LogExpectedImprovement(model, best_f=best_f, maximize=False)(candidates)
        ei = ExpectedImprovement(model, best_f=best_f, maximize=False)(candidates)
    assert z.min() < -10  # the tail, where EI underflows and only a stable log h is usable
    assert torch.allclose(log_ei_h(z) + sigma.log(), log_ei, rtol=1e-12, atol=1e-12)
    assert torch.allclose(sigma * ei_h(z), ei, rtol=1e-12, atol=0)
