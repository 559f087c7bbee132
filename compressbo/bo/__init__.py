"""The BO engine: boxes and noisy numbers with known variances, nothing of networks.

- :class:`~compressbo.bo.optimizer.Optimizer`: ask/tell with pending points, kappa and a JSON state.
- :mod:`~compressbo.bo.loop`: the one ask -> evaluate -> tell -> record loop, used by
  ``compressbo compress`` and by every run of ``compressbo compare``.
- :mod:`~compressbo.bo.models`: the GPs; :mod:`~compressbo.bo.acquisition`: the acquisitions.

Example:
    >>> import torch
    >>> from compressbo.bo import Optimizer
    >>> opt = Optimizer([(0.0, 1.0)] * 2, acquisition="cei", seed=0)
    >>> x = opt.ask()
    >>> opt.tell(x, float((x - 0.3).pow(2).sum()), 1e-4)
"""

from compressbo.bo.acquisition import ACQUISITION_NAMES, make_acquisition
from compressbo.bo.optimizer import Optimizer, Recommendation

__all__ = ["ACQUISITION_NAMES", "Optimizer", "Recommendation", "make_acquisition"]
