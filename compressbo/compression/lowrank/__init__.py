"""Low-rank factorizations of Linear and Conv2d layers, cached factors and rank schemes.

- :func:`factorize_linear` / :func:`factorize_conv`: one layer to its replacement module.
- :class:`LayerFactors` / :class:`FactorCache`: a layer's decomposition computed once (and
  cached on disk), then truncated to any ranks.
- :mod:`.ranks`: ``theta -> ranks`` schemes, parameter and FLOP counts.
- :class:`Factorization` / :data:`FACTORIZATIONS`: one entry per method (:mod:`.svd`,
  :mod:`.tucker`, :mod:`.vh`); :func:`factorization` looks one up by name.
"""

from __future__ import annotations

from .factorization import Factorization
from .registry import FACTORIZATIONS, factorization
from .cache import FactorCache, LayerFactors, default_cache_dir, weight_key
from .factorize import (
    build_factorized,
    check_ranks,
    decompose,
    empty_factorized,
    factorization_problem,
    factorize_conv,
)
from .ranks import (
    METHODS,
    SCHEMES,
    check_method,
    check_scheme,
    LayerGeometry,
    Ranks,
    factorized_macs,
    factorized_params,
    full_macs,
    full_params,
    keeps_original,
    layer_ranks,
    max_ranks,
    rank_breakpoints,
    rank_knots,
    ranks_for_theta,
)
from .svd import SVDFactors, factorize_linear, svd_factors
from .tucker import TuckerFactors, refine_tucker2, tucker2_factors
from .vh import vh_factors

__all__ = [
    "FACTORIZATIONS",
    "Factorization",
    "METHODS",
    "SCHEMES",
    "check_method",
    "check_scheme",
    "FactorCache",
    "LayerFactors",
    "LayerGeometry",
    "Ranks",
    "SVDFactors",
    "TuckerFactors",
    "build_factorized",
    "check_ranks",
    "decompose",
    "default_cache_dir",
    "empty_factorized",
    "factorization",
    "factorization_problem",
    "factorize_conv",
    "factorize_linear",
    "factorized_macs",
    "factorized_params",
    "full_macs",
    "full_params",
    "keeps_original",
    "layer_ranks",
    "max_ranks",
    "rank_breakpoints",
    "rank_knots",
    "ranks_for_theta",
    "refine_tucker2",
    "svd_factors",
    "tucker2_factors",
    "vh_factors",
    "weight_key",
]
