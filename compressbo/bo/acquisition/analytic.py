r"""The closed-form pieces of the analytic acquisitions: their floors, and EI's ``h`` and ``log h``.

Two floors keep ``sigma`` and its gradient finite where a posterior variance is (numerically)
zero; they are one floor in two units:

- :data:`POSTERIOR_VARIANCE_FLOOR` (``1e-12``, BoTorch's analytic EI's) floors a *variance*
  before its square root (CEI's ``st^2``, EI-GN's ``s_H^2``);
- :data:`POSTERIOR_STD_FLOOR` (its square root, ``1e-6``) floors a *standard deviation*
  that arrives as one (ERM's ``s_f`` of the transformed GP).

The observation-noise floors of the GP fit are another matter
(``compressbo.bo.models.gp.VARIANCE_FLOOR``, in standardized units).
"""

from __future__ import annotations

__all__ = ["POSTERIOR_STD_FLOOR", "POSTERIOR_VARIANCE_FLOOR"]

POSTERIOR_VARIANCE_FLOOR = 1e-12  # floor of a posterior variance in the analytic acquisitions
POSTERIOR_STD_FLOOR = POSTERIOR_VARIANCE_FLOOR**0.5  # the same floor on a standard deviation
