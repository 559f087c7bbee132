"""Wall time of one BO step (GP fit + acquisition maximization) per acquisition.

One step is ``Optimizer.ask()`` right after ``tell`` invalidated the GP: it fits the
fixed-noise GP on ``n`` observations and maximizes the acquisition at the default
strength (10 L-BFGS-B restarts from 512 raw Sobol samples). Observations are a noisy
Levy function in ``d`` dimensions with heteroscedastic known variances, searched on the box
``[0.005, 1]^d`` (compression's wide box, mapped affinely onto Levy's). ``--warp`` and
``--surrogate`` set the GP's input scale and surrogate as compressbo's flags do; with
``composite`` the objective is ``mean(theta) + levy``, the mean a known cost (as a parameter
ratio is). Each cell is the median over ``--repeats`` steps (different data sets), and every
acquisition's time is also printed as a ratio to EI's.

Goal (2-core CPU): a CEI step at n = 300, d = 16 within 2 s and within 1.5x of EI.

Example:
    python scripts/bench_bo_step.py --n 300 --d 16 --acq ei cei
    python scripts/bench_bo_step.py --n 36 --d 3 --acq ei cei --warp learned --surrogate composite
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from botorch.test_functions import Levy

from compressbo.bo.acquisition import ACQUISITION_NAMES, acquisition_spec
from compressbo.bo.models.warping import WARP_NAMES, needs_known_scale
from compressbo.bo.optimizer import SURROGATES, Optimizer, applicable_surrogate, applicable_warp

DEFAULT_ACQUISITIONS = (
    "ei", "logei", "cei", "logcei", "pi", "cpi", "ucb", "nei", "qlognei", "eign", "erm", "cbm"
)


def mean_cost(X: torch.Tensor) -> torch.Tensor:
    """The known cost of the composite surrogate: ``batch x d`` -> ``batch``, the mean theta."""
    return X.mean(-1)


def observed_optimizer(
    acquisition: str, n: int, d: int, seed: int, warp: str = "none", surrogate: str = "sum"
) -> Optimizer:
    """An optimizer told ``n`` noisy Levy observations, laid out like a BO run.

    Half the points are uniform in the box, half cluster around the optimum (normal,
    5% of the range), as after a BO run has converged on a basin.
    """
    generator = torch.Generator().manual_seed(seed)
    problem = Levy(dim=d).to(torch.float64)
    lower, upper = problem.bounds
    u = torch.rand(n, d, generator=generator, dtype=torch.float64)
    optimum = (problem.optimizers[0] - lower) / (upper - lower)
    cluster = optimum + 0.05 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    u[n // 2 :] = cluster[n // 2 :].clamp(0, 1)
    box = torch.tensor([[0.005] * d, [1.0] * d], dtype=torch.float64)
    X = box[0] + (box[1] - box[0]) * u
    f = problem(lower + (upper - lower) * u)
    noise_std = 0.02 * (f.max() - f.min()) * torch.rand(n, generator=generator, dtype=torch.float64)
    Y = f + noise_std * torch.randn(n, generator=generator, dtype=torch.float64)
    options = (
        {"f_star": problem.optimal_value}  # Levy's minimum, 0: erm / cbm need it
        if acquisition_spec(acquisition).known_optimum
        else {}
    )
    composite = {"known_cost": mean_cost} if surrogate == "composite" else {}
    optimizer = Optimizer(
        box,
        acquisition=acquisition,
        n_init=1,
        seed=seed,
        acquisition_options=options,
        warp=warp,
        surrogate=surrogate,
        **composite,
    )
    for x, y, var in zip(X, Y.tolist(), (noise_std**2).tolist()):
        if composite:  # the known cost is added exactly; the GP models the Levy part
            optimizer.tell(x, mean_cost(x).item() + y, var, modelled=(y, var))
        else:
            optimizer.tell(x, y, var)
    return optimizer


def step_seconds(acquisition: str, n: int, d: int, repeats: int, warp: str = "none", surrogate: str = "sum") -> float:
    """Median wall time of one ``ask()`` (fit + maximization) over ``repeats`` data sets."""
    times = []
    for seed in range(repeats):
        optimizer = observed_optimizer(acquisition, n, d, seed, warp, surrogate)
        start = time.perf_counter()
        optimizer.ask()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 150, 300])
    parser.add_argument("--d", type=int, nargs="+", default=[3, 13, 16])
    parser.add_argument(
        "--acq", nargs="+", default=list(DEFAULT_ACQUISITIONS), choices=ACQUISITION_NAMES
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warp", default="none", choices=[w for w in WARP_NAMES if not needs_known_scale(w)],  # Levy has no layers' spectra
        help="the GP's input scale (none)",
    )
    parser.add_argument("--surrogate", default="sum", choices=SURROGATES, help="sum or composite (sum)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    acquisitions = ["ei"] + [a for a in args.acq if a != "ei"]
    warnings.simplefilter("ignore")
    step_seconds("ei", 20, 2, repeats=1)  # warm-up: imports, first-call overheads
    print(f"torch threads: {torch.get_num_threads()}; median of {args.repeats} steps; "
          f"warp {args.warp}, surrogate {args.surrogate}")
    print(f"{'n':>4} {'d':>3} {'acq':>8} {'seconds':>8} {'x EI':>6}")
    for d in args.d:
        for n in args.n:
            ei_seconds = None
            for acquisition in acquisitions:
                # as compressbo runs them: eign on theta itself, nei/kg/erm/cbm on the sum
                warp, surrogate = applicable_warp(acquisition, args.warp), applicable_surrogate(acquisition, args.surrogate)
                seconds = step_seconds(acquisition, n, d, args.repeats, warp, surrogate)
                ei_seconds = seconds if acquisition == "ei" else ei_seconds
                print(
                    f"{n:>4} {d:>3} {acquisition:>8} {seconds:>8.3f} "
                    f"{seconds / ei_seconds:>6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
