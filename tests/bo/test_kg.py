from __future__ import annotations

import math

import pytest
import torch
from botorch.utils.sampling import manual_seed

from compressbo.bo.acquisition import (
    discrete_knowledge_gradient,
    discrete_knowledge_gradient_at,
    make_acquisition,
)
from compressbo.bo.models.gp import fit_gp, training_data

BOUNDS_1D = torch.tensor([[0.0], [1.0]], dtype=torch.float64)


def lines(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(k, generator=generator, dtype=torch.float64)
    b = torch.randn(k, generator=generator, dtype=torch.float64)
    return a, b


def monte_carlo_kg(a: torch.Tensor, b: torch.Tensor, n: int = 1_000_000):
    """Samples of ``min a - min_i (a_i + b_i Z)`` and their mean's standard error."""
    generator = torch.Generator().manual_seed(123)
    Z = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    gain = a.min() - (a + b * Z).amin(-1)
    return gain.mean(), gain.std() / math.sqrt(n)


@pytest.mark.parametrize("seed", range(4))
def test_discrete_envelope_equals_monte_carlo(seed):
    a, b = lines(k=3 + 4 * seed, seed=seed)
    if seed == 3:  # ties in slope and duplicated lines: the envelope drops them
        a, b = torch.cat([a, a[:2], a[:1] - 0.3]), torch.cat([b, b[:2], b[:1]])
    kg = discrete_knowledge_gradient(a, b)
    mc, se = monte_carlo_kg(a, b)
    assert kg.item() > 0
    assert abs(kg.item() - mc.item()) <= 4 * se.item()


def test_kg_is_nonnegative_and_zero_without_a_crossing():
    for seed in range(20):
        a, b = lines(k=6, seed=100 + seed)
        assert discrete_knowledge_gradient(a, b).item() >= 0
    a = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    assert discrete_knowledge_gradient(a, torch.full_like(a, 0.7)).item() == 0.0
    assert discrete_knowledge_gradient(a[:1], a[:1] + 1).item() == 0.0
    # two lines: KG = |b1 - b2| h(-|a1 - a2| / |b1 - b2|), the Gaussian lemma
    kg = discrete_knowledge_gradient(a[:2], torch.tensor([0.0, 2.0]).double())
    z = -0.5
    h = math.exp(-z * z / 2) / math.sqrt(2 * math.pi) + z * 0.5 * math.erfc(-z / math.sqrt(2))
    assert kg.item() == pytest.approx(2.0 * h, rel=1e-12)


@pytest.fixture(scope="module")
def fitted_1d():
    generator = torch.Generator().manual_seed(0)
    X = torch.rand(5, 1, generator=generator, dtype=torch.float64)
    Y = torch.sin(6 * X[:, 0]) + 0.2 * torch.randn(5, generator=generator).double()
    with manual_seed(0):  # few noisy points: the minimum can still move
        return fit_gp(X, Y, torch.full_like(Y, 0.04), BOUNDS_1D), X


def test_kg_tends_to_zero_as_the_noise_grows(fitted_1d):
    model, X = fitted_1d
    x = torch.tensor([0.8], dtype=torch.float64)
    values = [
        discrete_knowledge_gradient_at(model, X, x, noise).item()
        for noise in (1e-3, 1e-1, 10.0, 1e3)
    ]
    assert values[0] > 1e-2
    assert all(0 <= later < earlier for earlier, later in zip(values, values[1:]))
    assert values[-1] < 1e-6 * values[0]


def test_botorch_kg_agrees_with_the_exact_kg_over_a_dense_grid(fitted_1d):
    # In 1-D the inner minimum over a dense grid is the continuous minimum, so BoTorch's
    # one-shot KG (fantasies with the mean training noise) estimates the same quantity.
    model, X = fitted_1d
    grid = torch.linspace(0, 1, 401, dtype=torch.float64).unsqueeze(-1)
    noise = training_data(model)[2].mean().item()
    points = torch.tensor([[0.1], [0.5], [0.8], [0.9]], dtype=torch.float64)
    with manual_seed(0):
        kg = make_acquisition("kg", model, X, num_fantasies=128)
        botorch_values = kg.evaluate(
            points.unsqueeze(-2), bounds=BOUNDS_1D, num_restarts=4, raw_samples=64
        )
    exact = torch.stack(
        [discrete_knowledge_gradient_at(model, grid, x, noise) for x in points]
    )
    assert torch.all(exact > 5e-4) and exact.max() > 1e-2
    assert torch.allclose(botorch_values.detach(), exact, rtol=0.1, atol=0.02 * exact.max())
