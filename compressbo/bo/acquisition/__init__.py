"""Acquisition functions for minimization, and the registry that names them.

Every acquisition is oriented so that a larger value is a better candidate for a
*minimization* problem. Each is a thin BoTorch ``AcquisitionFunction`` over small pure math
helpers, one concept per module:

- :mod:`~compressbo.bo.acquisition.analytic`: the closed-form pieces they share (the
  posterior floors; EI's ``h`` and a stable ``log h``).
- :mod:`~compressbo.bo.acquisition.corrected`: CEI, LogCEI and corrected PI (Zhou, Ma &
  Blaschko, 2023), the improvement over the *random* incumbent value ``f(x+)``.
- :mod:`~compressbo.bo.acquisition.gradient_norm`: EI of ``f + lam ||grad f||^2`` (EI-GN).
- :mod:`~compressbo.bo.acquisition.known_optimum`: ERM and CBM, which need ``f*``.
- :mod:`~compressbo.bo.acquisition.knowledge_gradient`: the exact discrete KG.
- :mod:`~compressbo.bo.acquisition.registry`: the names, display labels and capabilities
  (``AcquisitionSpec``) of every acquisition, BoTorch's own (EI, LogEI, PI, UCB, NEI,
  qLogNEI, KG) included, and :func:`make_acquisition`. Add an acquisition by adding one
  entry to ``ACQUISITIONS``.
"""

from compressbo.bo.acquisition.corrected import (
    CorrectedExpectedImprovement,
    CorrectedProbabilityOfImprovement,
    LogCorrectedExpectedImprovement,
    corrected_expected_improvement,
    corrected_improvement_moments,
    corrected_probability_of_improvement,
    log_corrected_expected_improvement,
)
from compressbo.bo.acquisition.gradient_norm import (
    ExpectedImprovementGradientNorm,
    JointPosteriorModel,
    gradient_norm_moments,
)
from compressbo.bo.acquisition.knowledge_gradient import discrete_knowledge_gradient, discrete_knowledge_gradient_at
from compressbo.bo.acquisition.known_optimum import NegativeConfidenceBoundMinimization, NegativeExpectedRegret
from compressbo.bo.acquisition.registry import (
    ACQUISITION_NAMES,
    ACQUISITIONS,
    CPI_RELATIVE_MARGIN,
    EIGN_RELATIVE_WEIGHT,
    UCB_BETA,
    AcquisitionSpec,
    acquisition_label,
    acquisition_spec,
    is_log_acquisition,
    is_monte_carlo,
    make_acquisition,
    validate_options,
)

__all__ = [
    "ACQUISITIONS",
    "CPI_RELATIVE_MARGIN",
    "EIGN_RELATIVE_WEIGHT",
    "UCB_BETA",
    "ACQUISITION_NAMES",
    "AcquisitionSpec",
    "CorrectedExpectedImprovement",
    "CorrectedProbabilityOfImprovement",
    "ExpectedImprovementGradientNorm",
    "JointPosteriorModel",
    "LogCorrectedExpectedImprovement",
    "NegativeConfidenceBoundMinimization",
    "NegativeExpectedRegret",
    "acquisition_label",
    "acquisition_spec",
    "corrected_expected_improvement",
    "corrected_improvement_moments",
    "corrected_probability_of_improvement",
    "discrete_knowledge_gradient",
    "discrete_knowledge_gradient_at",
    "gradient_norm_moments",
    "is_log_acquisition",
    "is_monte_carlo",
    "log_corrected_expected_improvement",
    "make_acquisition",
    "validate_options",
]
