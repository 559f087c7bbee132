"""Surrogate models: the fixed-noise GP and what is derived from it.

- :mod:`~compressbo.bo.models.gp`: ``fit_gp`` (BoTorch ``SingleTaskGP`` with ``train_Yvar``),
  the incumbent, pending points by a kriging believer.
- :mod:`~compressbo.bo.models.derivative`: the joint posterior of ``(f, grad f)`` of a value GP.
- :mod:`~compressbo.bo.models.gradient_enhanced`: a GP that also observes gradients.
- :mod:`~compressbo.bo.models.known_optimum`: the transformed GP ``f* + g^2 / 2`` of ERM and CBM.
"""
