r"""Ask/tell Bayesian optimizer for noisy objectives with known per-point variance.

``ask`` proposes points, ``tell`` records ``(x, y, yvar)``; the optimizer minimizes.

- Initial design: scrambled Sobol points while fewer than ``n_init`` points are
  observed or pending (and while nothing is observed yet). ``acquisition="random"``
  continues the same Sobol sequence forever and never fits a GP to propose (its
  ``recommend`` still uses the GP, like every other acquisition).
- Then each proposal fits the fixed-noise GP (``compressbo.bo.models.gp.fit_gp``), builds the
  acquisition (``compressbo.bo.acquisition.make_acquisition``) and maximizes it with
  ``optimize_acqf`` (``num_restarts`` L-BFGS-B restarts from the best of
  ``raw_samples`` Sobol points, L-BFGS-B run to convergence).
- Gradients: ``tell(x, y, yvar, gradient)`` may carry ``grad f(x)`` (exact, e.g. by
  autograd). When every observation has one and the acquisition is
  ``gradient_enhanced`` (eign), proposals use the gradient-enhanced GP
  (``compressbo.bo.models.gradient_enhanced.fit_gradient_gp``) instead of the value GP; with a
  ``known_kernel`` they do not (that prior is for values only). ``recommend`` always
  uses the value GP, so recommendations of all acquisitions come from the same model.
- Pending points (asked, not yet told): analytic acquisitions see the GP conditioned
  on its own mean there (kriging believer), Monte Carlo ones get ``X_pending``. A
  proposal never duplicates a pending point.
- Kernel: ``kernel="rbf"`` (BoTorch's default) or ``"matern52"`` (the corrected-EI paper's
  ARD Matern-5/2 with Gamma priors), see ``compressbo.bo.models.gp.KERNELS``; the value GP,
  the known-optimum GP and the gradient-enhanced GP all use it (a ``known_kernel`` overrides
  it for the value GP).
- Termination (Zhou, Ma & Blaschko, 2023): with ``kappa`` set, ``should_stop``
  becomes True at the first proposal whose maximized acquisition value is below
  ``kappa`` (``log(kappa)`` for log acquisitions).
- Reproducibility: every random choice of a proposal is seeded from ``(seed, number
  of points asked so far)``; ``state_dict`` is plain JSON, and an optimizer restored
  from it proposes exactly the same next point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from botorch.utils.sampling import manual_seed
from torch import Tensor
from torch.quasirandom import SobolEngine

from compressbo.bo.acquisition import ACQUISITION_NAMES, acquisition_spec, make_acquisition, validate_options
from compressbo.bo.constraints import KnownConstraint, maximize_feasible
from compressbo.bo.models.composite import CompositeModel
from compressbo._json import tag_tensors, untag_tensors
from compressbo.exceptions import OptimizerInputError, SettingError
from compressbo.bo.models.gp import DEFAULT_KERNEL, check_kernel, condition_on_pending, fit_gp, incumbent
from compressbo.bo.models.gradient_enhanced import fit_gradient_gp, GradientGP
from compressbo.bo.models.warping import KnownScale, validate_warp

STATE_FORMAT = "compressbo.optimizer/1"
DUPLICATE_TOLERANCE = 1e-6  # max-norm distance in the unit cube below which points match


@dataclass(frozen=True)
class Recommendation:
    """The incumbent under the current GP.

    Attributes:
        x: A ``d`` tensor, the observed point with the lowest posterior mean.
        mean: Posterior mean of ``f(x)``.
        std: Posterior standard deviation of ``f(x)`` (latent, without noise).
    """

    x: Tensor
    mean: float
    std: float


class Optimizer:
    r"""Noise-aware Bayesian optimizer with an ask/tell interface (minimization).

    Example:
        >>> opt = Optimizer([(0.0, 1.0), (0.0, 1.0)], acquisition="cei", kappa=1e-3)
        >>> while not opt.should_stop and opt.n_observed < 50:
        ...     x = opt.ask()
        ...     y, yvar = objective(x)
        ...     opt.tell(x, y, yvar)
        >>> best = opt.recommend()
    """

    def __init__(
        self,
        bounds: Tensor | Sequence[tuple[float, float]],
        acquisition: str = "cei",
        n_init: int | None = None,
        seed: int = 0,
        kappa: float | None = None,
        acquisition_options: dict[str, Any] | None = None,
        num_restarts: int = 10,
        raw_samples: int = 512,
        known_kernel: dict[str, float] | None = None,
        kernel: str = DEFAULT_KERNEL,
        warp: str = "none",
        surrogate: str = "sum",
        known_cost: Callable[[Tensor], Tensor] | None = None,
        cost_weight: float = 1.0,
        constraint: KnownConstraint | None = None,
        known_scale: KnownScale | None = None,
    ) -> None:
        r"""Set up an optimizer over a box.

        Args:
            bounds: A ``2 x d`` tensor (lower row, upper row) or a sequence of ``d``
                ``(lower, upper)`` pairs.
            acquisition: A name from ``compressbo.bo.acquisition.ACQUISITION_NAMES``.
            n_init: Number of Sobol points before the GP takes over; defaults to
                ``max(5, 2 * d)``.
            seed: Seed of the Sobol design and of every proposal.
            kappa: Stopping threshold on the maximized acquisition value (in
                objective units; compared as ``log(kappa)`` for log acquisitions), or
                None to never report stop. Only for acquisitions whose maximized value
                falls to 0 as the search converges: not pi, ucb, erm, cbm or random.
            acquisition_options: Options for ``make_acquisition`` (e.g. ``beta`` for
                ucb, ``num_fantasies`` for nei / kg, ``f_star`` for erm / cbm, ``lam``
                for eign); JSON-serializable.
            num_restarts: L-BFGS-B restarts of the acquisition maximization.
            raw_samples: Sobol samples that seed the restarts.
            known_kernel: ``{"lengthscale": l, "outputscale": s2}`` to model ``f`` with
                this known RBF prior instead of fitting the GP (see
                ``compressbo.bo.models.gp.known_rbf_gp``); None fits it.
            kernel: Covariance of the fitted GPs, a name in
                ``compressbo.bo.models.gp.KERNEL_NAMES``: ``"rbf"`` or ``"matern52"``.
            warp: The scale the GP sees ``x`` on (``compressbo.bo.models.warping``):
                ``none``, ``log`` (needs positive lower bounds), ``learned`` or ``spectral``
                (needs ``known_scale``). The acquisition is still maximized over ``x`` in
                the box. Only ``none`` with ``known_kernel`` or a gradient-enhanced
                acquisition (eign).
            surrogate: ``sum`` (the GP models ``y`` itself) or ``composite`` (the objective
                is ``y = known_cost(x) + cost_weight * e(x)``: the GP models ``e`` from the
                ``modelled`` values given to :meth:`tell`, and the acquisition sees
                ``compressbo.bo.models.composite.CompositeModel``).
            known_cost: The known term of a composite objective: a callable
                ``batch_shape x d -> batch_shape``, differentiable. Not saved in the state;
                pass it again to :meth:`from_state_dict`.
            cost_weight: The weight ``gamma`` of the modelled term, ``>= 0``.
            constraint: A known constraint ``cost(x) <= bound``
                (``compressbo.bo.constraints.KnownConstraint``): every point asked and the
                recommendation meet it exactly. Its callables are not saved in the state
                (its bound is); pass it again to :meth:`from_state_dict`.
            known_scale: The problem's known scale of each coordinate
                (``compressbo.bo.models.warping.KnownScale``) that ``warp="spectral"`` starts
                from; plain numbers, not saved in the state (the problem computes them again):
                pass it again to :meth:`from_state_dict`.
        """
        self._bounds = _as_bounds(bounds)
        d = self.dim
        options = dict(acquisition_options or {})
        n_init = check_search_settings(acquisition, n_init, d, seed, kappa, options, num_restarts, raw_samples)
        check_warp(warp, self._bounds, acquisition, known_kernel, known_scale)
        check_surrogate(surrogate, acquisition, known_cost, cost_weight, known_kernel)
        self.acquisition = acquisition
        self.acquisition_options = options
        self.n_init = n_init
        self.seed = int(seed)
        self.kappa = None if kappa is None else float(kappa)
        self.num_restarts = int(num_restarts)
        self.raw_samples = int(raw_samples)
        self.known_kernel = None if known_kernel is None else dict(known_kernel)
        self.kernel = check_kernel(kernel)
        self.warp = warp
        self.known_scale = known_scale
        self.surrogate = surrogate
        self.known_cost = known_cost
        self.cost_weight = float(cost_weight)
        if constraint is not None:
            constraint.check_box(self._bounds)
        self.constraint = constraint
        self._modelled = torch.empty(0, 2, dtype=torch.float64)  # (value, variance); NaN: not told
        self._X = torch.empty(0, d, dtype=torch.float64)
        self._Y = torch.empty(0, dtype=torch.float64)
        self._Yvar = torch.empty(0, dtype=torch.float64)
        self._gradients = torch.empty(0, d, dtype=torch.float64)  # NaN rows: not told
        self._pending = torch.empty(0, d, dtype=torch.float64)
        self._n_asked = 0
        self._sobol = SobolEngine(d, scramble=True, seed=self.seed)
        self._model: SingleTaskGP | None = None
        self._gradient_model: GradientGP | None = None
        self.last_acquisition_value: float | None = None
        self.should_stop = False

    # ------------------------------------------------------------------ properties

    @property
    def bounds(self) -> Tensor:
        """The ``2 x d`` search box."""
        return self._bounds.clone()

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the search space."""
        return self._bounds.shape[-1]

    @property
    def X(self) -> Tensor:
        """``n x d`` observed inputs."""
        return self._X.clone()

    @property
    def Y(self) -> Tensor:
        """``n`` observed values."""
        return self._Y.clone()

    @property
    def Yvar(self) -> Tensor:
        """``n`` observation noise variances."""
        return self._Yvar.clone()

    @property
    def gradients(self) -> Tensor:
        """``n x d`` observed gradients; rows of NaN where none was told."""
        return self._gradients.clone()

    @property
    def pending(self) -> Tensor:
        """``k x d`` points asked but not yet told."""
        return self._pending.clone()

    @property
    def n_observed(self) -> int:
        """Number of observations told."""
        return self._X.shape[0]

    # ------------------------------------------------------------------ ask / tell

    def ask(self, k: int | None = None) -> Tensor:
        r"""Propose the next point(s) and mark them pending.

        Args:
            k: Number of points, or None for one.

        Returns:
            A ``d`` tensor when ``k`` is None, else a ``k x d`` tensor, inside the box.
        """
        if k is not None and (not isinstance(k, int) or k < 1):
            raise OptimizerInputError(f"k must be a positive integer or None, got {k!r}.")
        points = [self._ask_one() for _ in range(1 if k is None else k)]
        return points[0] if k is None else torch.stack(points)

    def tell(
        self,
        x: Tensor | Sequence[float],
        y: float,
        yvar: float,
        gradient: Tensor | Sequence[float] | None = None,
        modelled: tuple[float, float] | None = None,
    ) -> None:
        r"""Record an observation ``y = f(x) + noise`` with noise variance ``yvar``.

        Args:
            x: A ``d`` tensor (or sequence) inside the box; a pending point is removed
                from the pending set.
            y: The observed value (finite).
            yvar: Its noise variance (finite, ``>= 0``).
            gradient: The exact gradient ``grad f(x)``, a ``d`` tensor (or sequence),
                or None.
            modelled: ``(e, var_e)``, the modelled part of a composite objective
                (``y = known_cost(x) + cost_weight * e``) and its noise variance; required
                by ``surrogate="composite"``, recorded (and unused) otherwise.
        """
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        if x.shape != (self.dim,):
            raise OptimizerInputError(
                f"x must have {self.dim} values, got {x.numel()}; pass one point."
            )
        if not bool(torch.isfinite(x).all()):
            raise OptimizerInputError("x contains NaN or infinite values.")
        slack = 1e-9 * (self._bounds[1] - self._bounds[0])
        if bool((x < self._bounds[0] - slack).any() or (x > self._bounds[1] + slack).any()):
            raise OptimizerInputError(f"x = {x.tolist()} lies outside the search box.")
        y, yvar = _finite_float(y, "y"), _finite_float(yvar, "yvar")
        if yvar < 0:
            raise OptimizerInputError(f"yvar must be >= 0 (a variance), got {yvar}.")
        if gradient is None:
            gradient = torch.full((self.dim,), math.nan, dtype=torch.float64)
        else:
            gradient = torch.as_tensor(gradient, dtype=torch.float64).reshape(-1)
            if gradient.shape != (self.dim,) or not bool(torch.isfinite(gradient).all()):
                raise OptimizerInputError(
                    f"gradient must be {self.dim} finite values (df/dx at x) or None, "
                    f"got {gradient.tolist()}."
                )
        if modelled is None:
            if self.surrogate == "composite":
                raise OptimizerInputError(
                    "the composite surrogate models e in y = cost(x) + gamma * e: pass "
                    "tell(..., modelled=(e, var_e))."
                )
            modelled = (math.nan, math.nan)
        else:
            modelled = (_finite_float(modelled[0], "modelled value"), _finite_float(modelled[1], "modelled variance"))
            if modelled[1] < 0:
                raise OptimizerInputError(f"the modelled variance must be >= 0, got {modelled[1]}.")
        match = self._pending_index(x)
        if match is not None:
            self._pending = torch.cat([self._pending[:match], self._pending[match + 1 :]])
        self._X = torch.cat([self._X, x.unsqueeze(0)])
        self._Y = torch.cat([self._Y, self._Y.new_tensor([y])])
        self._Yvar = torch.cat([self._Yvar, self._Yvar.new_tensor([yvar])])
        self._gradients = torch.cat([self._gradients, gradient.unsqueeze(0)])
        self._modelled = torch.cat([self._modelled, self._modelled.new_tensor([modelled])])
        self._model = None
        self._gradient_model = None

    def recommend(self) -> Recommendation:
        """The incumbent (lowest posterior mean among observed points) and its moments."""
        if self.n_observed == 0:
            raise OptimizerInputError("recommend() needs at least one observation; tell() first.")
        model = self._fitted_model()
        x = incumbent(model, self._feasible_observed())
        with torch.no_grad():
            posterior = model.posterior(x)
        return Recommendation(
            x=x.reshape(-1),
            mean=posterior.mean.item(),
            std=posterior.variance.clamp_min(0).sqrt().item(),
        )

    def fitted_model(self) -> SingleTaskGP | CompositeModel:
        """The GP of the observations so far (a ``CompositeModel`` for ``surrogate="composite"``)."""
        if self.n_observed == 0:
            raise OptimizerInputError("there is no model before the first observation; tell() first.")
        return self._fitted_model()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON-serializable Python values."""
        return {
            "format": STATE_FORMAT,
            "bounds": self._bounds.tolist(),
            "acquisition": self.acquisition,
            "acquisition_options": tag_tensors(self.acquisition_options),
            "n_init": self.n_init,
            "seed": self.seed,
            "kappa": self.kappa,
            "num_restarts": self.num_restarts,
            "raw_samples": self.raw_samples,
            "known_kernel": self.known_kernel,
            "kernel": self.kernel,
            "warp": self.warp,
            "surrogate": self.surrogate,
            "cost_weight": self.cost_weight,
            "constraint": None if self.constraint is None else self.constraint.state(),
            "modelled": [None if math.isnan(row[0]) else row for row in self._modelled.tolist()],
            "X": self._X.tolist(),
            "Y": self._Y.tolist(),
            "Yvar": self._Yvar.tolist(),
            "gradients": [
                None if bool(row.isnan().any()) else row.tolist() for row in self._gradients
            ],
            "pending": self._pending.tolist(),
            "n_asked": self._n_asked,
            "sobol_drawn": int(self._sobol.num_generated),
            "last_acquisition_value": self.last_acquisition_value,
            "should_stop": self.should_stop,
        }

    def load_state_dict(
        self,
        state: dict[str, Any],
        known_cost: Callable[[Tensor], Tensor] | None = None,
        constraint: KnownConstraint | None = None,
        known_scale: KnownScale | None = None,
    ) -> None:
        """Restore settings, observations, pending points and counters from ``state``.

        ``known_cost``: the composite surrogate's cost; ``constraint``: the known constraint,
        whose bound must be the state's; ``known_scale``: the ``spectral`` warp's scale
        (defaults: this optimizer's own).
        """
        if state.get("format") != STATE_FORMAT:
            raise OptimizerInputError(
                f"not an optimizer state (format {state.get('format')!r}, expected "
                f"{STATE_FORMAT!r})."
            )
        restored = Optimizer(
            bounds=torch.tensor(state["bounds"], dtype=torch.float64),
            acquisition=state["acquisition"],
            n_init=state["n_init"],
            seed=state["seed"],
            kappa=state["kappa"],
            acquisition_options=untag_tensors(state["acquisition_options"]),
            num_restarts=state["num_restarts"],
            raw_samples=state["raw_samples"],
            known_kernel=state.get("known_kernel"),
            kernel=state.get("kernel", DEFAULT_KERNEL),  # states before kernels: the default
            warp=state.get("warp", "none"),
            surrogate=state.get("surrogate", "sum"),
            known_cost=known_cost if known_cost is not None else getattr(self, "known_cost", None),
            cost_weight=state.get("cost_weight", 1.0),
            constraint=_restored_constraint(state, constraint if constraint is not None else getattr(self, "constraint", None)),
            known_scale=known_scale if known_scale is not None else getattr(self, "known_scale", None),
        )
        d = restored.dim
        restored._X = torch.tensor(state["X"], dtype=torch.float64).reshape(-1, d)
        restored._Y = torch.tensor(state["Y"], dtype=torch.float64).reshape(-1)
        restored._Yvar = torch.tensor(state["Yvar"], dtype=torch.float64).reshape(-1)
        gradients = state.get("gradients") or [None] * len(restored._Y)
        restored._gradients = torch.tensor(
            [[math.nan] * d if row is None else row for row in gradients],
            dtype=torch.float64,
        ).reshape(-1, d)
        modelled = state.get("modelled") or [None] * len(restored._Y)
        restored._modelled = torch.tensor(
            [[math.nan, math.nan] if row is None else row for row in modelled], dtype=torch.float64
        ).reshape(-1, 2)
        rows = {name: len(getattr(restored, f"_{name}")) for name in ("X", "Y", "Yvar", "gradients", "modelled")}
        if len(set(rows.values())) > 1:
            raise OptimizerInputError(
                "the state's observations disagree in length ("
                + ", ".join(f"{name} {n}" for name, n in rows.items()) + "); it is damaged."
            )
        restored._pending = torch.tensor(state["pending"], dtype=torch.float64).reshape(-1, d)
        restored._n_asked = int(state["n_asked"])
        restored._sobol.fast_forward(int(state["sobol_drawn"]))
        restored.last_acquisition_value = state["last_acquisition_value"]
        restored.should_stop = bool(state["should_stop"])
        self.__dict__.update(restored.__dict__)

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, Any],
        known_cost: Callable[[Tensor], Tensor] | None = None,
        constraint: KnownConstraint | None = None,
        known_scale: KnownScale | None = None,
    ) -> Optimizer:
        """A new optimizer restored from ``state_dict()`` output (``known_cost``: a composite's
        cost; ``known_scale``: the ``spectral`` warp's scale)."""
        optimizer = cls.__new__(cls)
        optimizer.load_state_dict(state, known_cost=known_cost, constraint=constraint, known_scale=known_scale)
        return optimizer

    # ------------------------------------------------------------------ internals

    def _ask_one(self) -> Tensor:
        if (
            self.n_observed == 0
            or self.n_observed + len(self._pending) < self.n_init
            or acquisition_spec(self.acquisition).model_free
        ):
            x = self._sobol_point()
            self.last_acquisition_value = None
        else:
            with manual_seed(_derived_seed(self.seed, _ASK, self._n_asked)):
                x, value = self._propose()
            self.last_acquisition_value = value
            if self.kappa is not None and value < self._threshold():
                self.should_stop = True
        self._n_asked += 1
        self._pending = torch.cat([self._pending, x.unsqueeze(0)])
        return x.clone()

    def _sobol_point(self) -> Tensor:
        if self.constraint is not None:
            return self.constraint.feasible_sobol_point(self._sobol, self._bounds)
        u = self._sobol.draw(1, dtype=torch.float64).reshape(-1)
        return self._bounds[0] + u * (self._bounds[1] - self._bounds[0])

    def _fitted_model(self) -> SingleTaskGP | CompositeModel:
        if self._model is None:
            composite = self.surrogate == "composite"
            Y, Yvar = (self._modelled[:, 0], self._modelled[:, 1]) if composite else (self._Y, self._Yvar)
            with manual_seed(_derived_seed(self.seed, _FIT, self.n_observed)):
                self._model = fit_gp(
                    self._X, Y, Yvar, self._bounds, self.known_kernel, self.kernel, warp=self.warp,
                    known_scale=self.known_scale,
                )
            if composite:
                self._model = CompositeModel(self._model, self.known_cost, self.cost_weight)
        return self._model

    def _fitted_gradient_model(self) -> GradientGP:
        if self._gradient_model is None:
            with manual_seed(_derived_seed(self.seed, _FIT, self.n_observed)):
                self._gradient_model = fit_gradient_gp(
                    self._X, self._Y, self._gradients, self._Yvar, self._bounds,
                    kernel=self.kernel,
                )
        return self._gradient_model

    def _uses_gradients(self) -> bool:
        """Whether proposals come from the gradient-enhanced GP."""
        return (
            acquisition_spec(self.acquisition).gradient_enhanced
            and self.known_kernel is None
            and not bool(self._gradients.isnan().any())
        )

    def _propose(self) -> tuple[Tensor, float]:
        """Maximize the acquisition; the best restart that is not a pending point."""
        gradient_enhanced = self._uses_gradients()
        model = self._fitted_gradient_model() if gradient_enhanced else self._fitted_model()
        options = dict(self.acquisition_options)
        X_baseline = self._X
        if len(self._pending):
            spec = acquisition_spec(self.acquisition)
            if spec.monte_carlo:
                options["X_pending"] = self._pending
            else:
                if gradient_enhanced:
                    model = model.condition_on_pending(self._pending)
                elif isinstance(model, CompositeModel):  # believe the modelled term's mean
                    model = model.with_error_model(condition_on_pending(model.error_model, self._pending))
                else:
                    # CBM and ERM also reward a small variance: believe the worst observation
                    lie = self._Y.max().item() if spec.known_optimum else None
                    model = condition_on_pending(model, self._pending, lie=lie)
                X_baseline = torch.cat([self._X, self._pending])
        acquisition = make_acquisition(self.acquisition, model, X_baseline, **options)
        if self.constraint is not None:
            candidates, values = self._maximize_feasible(acquisition)
        else:
            candidates, values = optimize_acqf(
                acquisition,
                bounds=self._bounds,
                q=1,
                num_restarts=self.num_restarts,
                raw_samples=self.raw_samples,
                return_best_only=False,
            )
        candidates, values = candidates.detach().reshape(-1, self.dim), values.detach()
        for i in values.reshape(-1).argsort(descending=True).tolist():
            if self._pending_index(candidates[i]) is None:
                return candidates[i].clone(), values.reshape(-1)[i].item()
        fallback = self._sobol_point()  # every restart ended on a pending point
        with torch.no_grad():
            return fallback, acquisition(fallback.reshape(1, 1, -1)).item()

    def _maximize_feasible(self, acquisition) -> tuple[Tensor, Tensor]:
        """Restarts maximized over the feasible set, each projected onto the exact budget."""
        assert self.constraint is not None
        candidates, _ = maximize_feasible(
            acquisition, self._bounds, self.constraint, num_restarts=self.num_restarts,
            raw_samples=self.raw_samples, seed=_derived_seed(self.seed, _RAW, self._n_asked) % 2**31,
        )
        lower, upper = self._bounds
        projected = torch.stack(
            [self.constraint.project(x.reshape(-1).clamp(lower, upper), self._bounds) for x in candidates.detach()]
        )
        with torch.no_grad():  # the values at the points proposed, not at the unprojected optima
            values = acquisition(projected.unsqueeze(1)).reshape(-1)
        return projected, values

    def _feasible_observed(self) -> Tensor:
        """The observed points that meet the constraint exactly (all of them without one)."""
        if self.constraint is None:
            return self._X
        feasible = [i for i, x in enumerate(self._X) if self.constraint.is_feasible(x)]
        if not feasible:
            raise OptimizerInputError("no observed point meets the constraint; there is nothing to recommend.")
        return self._X[feasible]

    def _pending_index(self, x: Tensor) -> int | None:
        """Index of the pending point equal to ``x`` (up to tolerance), or None."""
        if len(self._pending) == 0:
            return None
        scale = self._bounds[1] - self._bounds[0]
        distance = ((self._pending - x) / scale).abs().amax(dim=-1)
        i = int(distance.argmin())
        return i if distance[i] <= DUPLICATE_TOLERANCE else None

    def _threshold(self) -> float:
        assert self.kappa is not None
        return math.log(self.kappa) if acquisition_spec(self.acquisition).log else self.kappa


def check_search_settings(
    acquisition: str,
    n_init: int | None,
    dim: int | None,
    seed: int,
    kappa: float | None,
    acquisition_options: dict[str, Any],
    num_restarts: int,
    raw_samples: int,
) -> int | None:
    """Check the optimizer's settings, before any optimizer or objective exists.

    The one place these settings are checked: :class:`Optimizer` calls it, and so does a
    configuration that wants to fail before loading anything.

    Args:
        acquisition: Acquisition name.
        n_init: Initial design size, or ``None`` for ``max(5, 2 * dim)``.
        dim: The box's dimension, or ``None`` when not known yet.
        seed: Seed (an integer in ``0 .. 2^63 - 1``).
        kappa: Stopping threshold or ``None``.
        acquisition_options: ``make_acquisition`` options (``f_star`` for erm / cbm).
        num_restarts: Restarts of the acquisition maximization.
        raw_samples: Raw samples seeding the restarts.

    Returns:
        The initial design size (``None`` if ``n_init`` is ``None`` and ``dim`` unknown).

    Raises:
        SettingError: naming the setting at fault (``acq``, ``init``, ``seed``, ``kappa``,
            ``known_optimum``, ``num_restarts``).
    """
    spec = acquisition_spec(acquisition)
    if "X_pending" in acquisition_options:
        raise SettingError(
            "acquisition_options must not contain X_pending; the optimizer tracks pending points itself",
            setting="acquisition_options",
        )
    validate_options(acquisition, acquisition_options)
    if kappa is not None and not spec.vanishes_when_done:
        raise SettingError(
            f"kappa does not apply to {acquisition} (its maximized value does not "
            "fall to 0 as the search converges); drop kappa or use an improvement acquisition such as cei",
            setting="kappa",
        )
    if kappa is not None and not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa > 0):
        raise SettingError(f"kappa must be a positive number or None, got {kappa!r}", setting="kappa")
    if "f_star" in acquisition_options and acquisition_options["f_star"] is not None and not spec.known_optimum:
        raise SettingError(
            f"known_optimum applies to erm and cbm, not to {acquisition}; drop it or choose one of those",
            setting="known_optimum",
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise SettingError(f"seed must be an integer in 0..2^63-1, got {seed!r}", setting="seed")
    if n_init is None and dim is not None:
        n_init = max(5, 2 * dim)
    if n_init is not None and (isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1):
        raise SettingError(f"n_init (the initial design size) must be an integer >= 1, got {n_init!r}", setting="init")
    if num_restarts < 1 or raw_samples < num_restarts:
        raise SettingError(
            f"num_restarts must be >= 1 and raw_samples >= num_restarts, got {num_restarts} and {raw_samples}",
            setting="num_restarts",
        )
    return n_init


def _as_bounds(bounds: Tensor | Sequence[tuple[float, float]]) -> Tensor:
    """A validated float64 ``2 x d`` box from a tensor or a sequence of pairs."""
    if isinstance(bounds, Tensor):
        box = bounds.to(torch.float64)
    else:
        try:
            box = torch.tensor([list(pair) for pair in bounds], dtype=torch.float64).T
        except (TypeError, ValueError):
            raise OptimizerInputError(
                "bounds must be a 2 x d tensor or a sequence of (lower, upper) pairs."
            ) from None
    if box.dim() != 2 or box.shape[0] != 2 or box.shape[1] == 0:
        raise OptimizerInputError(
            f"bounds must be a 2 x d tensor or a sequence of (lower, upper) pairs, got "
            f"shape {tuple(box.shape)}."
        )
    if not bool(torch.isfinite(box).all()) or not bool((box[0] < box[1]).all()):
        raise OptimizerInputError("bounds must be finite with lower < upper in every dimension.")
    return box.clone()


SURROGATES: tuple[str, ...] = ("sum", "composite")


def check_surrogate(
    surrogate: str,
    acquisition: str,
    known_cost: Callable[[Tensor], Tensor] | None = None,
    cost_weight: float = 1.0,
    known_kernel: dict[str, float] | None = None,
) -> None:
    """A one-line ``SettingError`` if ``surrogate`` is unknown or cannot serve this search."""
    if surrogate not in SURROGATES:
        raise SettingError(
            f"unknown surrogate {surrogate!r}; choose one of: {', '.join(SURROGATES)}.",
            setting="surrogate",
        )
    if surrogate == "sum":
        return
    if known_cost is None or not callable(known_cost):
        raise SettingError(
            "the composite surrogate needs the objective's known cost (known_cost, a callable "
            "on batch x d tensors); only problems with a known cost have one.",
            setting="surrogate",
        )
    if not (math.isfinite(cost_weight) and cost_weight >= 0):
        raise SettingError(f"cost_weight must be a finite number >= 0, got {cost_weight}.", setting="surrogate")
    if known_kernel is not None or not acquisition_spec(acquisition).composite:
        usable = [name for name in ACQUISITION_NAMES if acquisition_spec(name).composite]
        raise SettingError(
            f"acquisition {acquisition!r} needs a GP of the objective itself, not the composite "
            f"surrogate; use surrogate 'sum', or one of: {', '.join(usable)}.",
            setting="surrogate",
        )


def applicable_surrogate(acquisition: str, default: str) -> str:
    """``default`` where ``acquisition`` works on the composite surrogate, else ``sum``.

    Acquisitions that need a GP of the objective itself (e.g. ``kg``, the known-optimum and
    gradient-enhanced ones) keep ``sum`` when a problem's default is ``composite``.
    """
    return default if acquisition_spec(acquisition).composite else "sum"


def applicable_warp(acquisition: str, default: str) -> str:
    """``default`` where ``acquisition`` takes a warped GP, else ``none``.

    Gradient-enhanced acquisitions (eign) differentiate the GP on the box's linear scale.
    """
    return "none" if acquisition_spec(acquisition).gradient_enhanced else default


def check_warp(
    warp: str, bounds: Tensor, acquisition: str, known_kernel: dict[str, float] | None = None,
    known_scale: KnownScale | None = None,
) -> None:
    """A one-line ``SettingError`` if ``warp`` is unknown or cannot serve this search."""
    validate_warp(warp, bounds, known_scale)
    if warp == "none":
        return
    if known_kernel is not None:
        raise SettingError(
            f"warp {warp!r} does not apply with a known kernel (a prior on x itself); use "
            "warp 'none'.",
            setting="warp",
        )
    if acquisition_spec(acquisition).gradient_enhanced:
        raise SettingError(
            f"acquisition {acquisition!r} differentiates the GP on the box's linear scale; "
            f"it takes warp 'none', not {warp!r}.",
            setting="warp",
        )


_ASK, _FIT, _RAW = 0, 1, 2  # purposes of derived seeds


def _restored_constraint(state: dict[str, Any], constraint: KnownConstraint | None) -> KnownConstraint | None:
    """``constraint`` once its bound is the state's; OptimizerInputError when they disagree."""
    saved = state.get("constraint")
    if saved is None and constraint is None:
        return None
    if saved is None or constraint is None or float(saved.get("bound")) != constraint.bound:
        raise OptimizerInputError(
            f"the state's constraint {saved!r} is not this optimizer's "
            f"{None if constraint is None else constraint.state()!r}; restore with the run's own budget."
        )
    return constraint


def _derived_seed(seed: int, purpose: int, count: int) -> int:
    """A well-mixed 63-bit seed for the ``count``-th ask (or fit) of a seeded run."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, purpose, count]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def _finite_float(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptimizerInputError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(value):
        raise OptimizerInputError(f"{name} must be finite, got {value}.")
    return value
