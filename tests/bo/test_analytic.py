"""The analytic acquisitions' closed-form pieces: the two posterior floors."""

from __future__ import annotations

import math

import torch

from compressbo.bo.acquisition.analytic import POSTERIOR_STD_FLOOR, POSTERIOR_VARIANCE_FLOOR
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
