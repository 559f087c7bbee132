"""Everything one compression objective needs, loaded once: spec, network, factors, data, evaluator.

:class:`CompressionSetup` is shared by ``compressbo compress`` (one run) and by comparisons on
compression problems (many runs of one problem); :func:`linear_schedule` grows ``m`` over a run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from compressbo.compression.build import build_network, preprocessing, weights_sha256
from compressbo.compression.compressor import Compressor
from compressbo.compression.config import ProblemConfig, RuntimeConfig, samples_range
from compressbo.compression.batching import default_batch_size
from compressbo.compression.data import expected_class_folders, load_validation
from compressbo.compression.energy import CALIBRATION_SIZE, SCALES
from compressbo.compression.evaluator import SubsampleEvaluator
from compressbo.compression.objective import CompressionObjective
from compressbo.compression.spec import NetworkSpec, load_spec
from compressbo.exceptions import SettingError

__all__ = ["DATA_SEED", "CompressionSetup", "Prebuilt", "linear_schedule"]

logger = logging.getLogger(__name__)

DATA_SEED = 0  # seed of the digits split and of FC3's first-use training: one network per spec


def linear_schedule(first: int, last: int, evaluations: int) -> Callable[[int], int]:
    """``m`` of evaluation ``i``: ``first`` at ``i = 0``, ``last`` at ``i = evaluations - 1``, linear between.

    Every observation carries its own variance ``~ p(1-p)/m``, so the GP weighs late, larger
    subsamples more.
    """
    span = max(evaluations - 1, 1)
    return lambda i: round(first + (last - first) * min(i, span) / span)


@dataclass
class CompressionSetup:
    """What a compression objective needs, loaded once from a problem and a runtime config.

    Shared by the compress job and by comparisons on compression problems.

    Attributes:
        config: The problem settings it was loaded from.
        spec: The network spec.
        network: The original network (weights loaded, eval mode).
        compressor: Its cached factors: ``theta -> compressed network``.
        evaluator: The subsampled evaluator on the validation set.
        bounds: ``2 x d`` box of ``theta`` (the spec's, or ``config.bounds`` for every layer).
        fingerprints: What the run is built from, for ``--resume`` to check: ``{"spec": SHA-256
            of the spec file, "weights": SHA-256 of the weights file or None, "data": the
            validation set's fingerprint}``.
    """

    config: ProblemConfig
    spec: NetworkSpec
    network: nn.Module
    compressor: Compressor
    evaluator: SubsampleEvaluator
    bounds: torch.Tensor
    fingerprints: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(
        cls,
        config: ProblemConfig,
        runtime: RuntimeConfig,
        seed: int = 0,
        *,
        trust_code: bool = True,
        data_fingerprint: dict[str, Any] | None = None,
        prebuilt: Prebuilt | None = None,
    ) -> CompressionSetup:
        """Load spec, data, weights and factors (bad input raises a :class:`UserInputError`).

        Args:
            config: What is minimized.
            runtime: Where it is evaluated.
            seed: Seed of the sequence of subsamples.
            trust_code: Import the spec's builder even if it is not on the allowlist: the
                caller named the spec (``config.model``) itself. ``--resume`` passes
                ``False`` unless ``--trust-code``, since there config.json names it.
            data_fingerprint: A run's recorded data fingerprint: the data must still be it
                (checked before anything else is loaded).
            prebuilt: The network's weights and factors from another setup of the same problem
                (:meth:`prebuilt`, e.g. a parallel run's driver): neither the weights file nor
                the factor cache is read and nothing is decomposed; the data is loaded here.
        """
        config.validate()
        runtime.validate()
        spec = load_spec(config.model)
        dataset = load_validation(
            config.data or spec.dataset,
            config.data_dir,
            transform=preprocessing(spec, config.weights),
            download=config.download,
            seed=DATA_SEED,
            classes=expected_class_folders(spec),
            fingerprint=data_fingerprint,
            workers=runtime.data_workers,
        )
        evaluator = SubsampleEvaluator(
            dataset, device=runtime.device, batch_size=runtime.batch_size, amp=runtime.amp, seed=seed,
            data_on_device=runtime.pool_on_device,
        )
        if config.final_samples is not None and config.final_samples > len(dataset):
            raise SettingError(
                f"final_samples {config.final_samples} asks for more than the {len(dataset)} validation examples; "
                "choose a smaller number",
                setting="final_samples",
            )
        if max(samples_range(config.samples)) > len(dataset):
            raise SettingError(
                f"samples {config.samples} asks for more than the {len(dataset)} validation examples; "
                "choose a smaller m",
                setting="samples",
            )
        if prebuilt is None:
            weights = resolve_weights(config, spec)
            network = build_network(spec, weights, trust_code=trust_code)
            weights_fingerprint = weights_sha256(spec, weights)
        else:
            network = build_network(spec, "random", trust_code=trust_code)
            network.load_state_dict(prebuilt.state_dict)
            weights_fingerprint = prebuilt.weights_fingerprint
        fingerprints = {"spec": spec.sha256, "weights": weights_fingerprint, "data": dataset.fingerprint()}
        compressor = Compressor(
            network, spec, scheme=config.scheme, method=config.method, threads=runtime.threads,
            factors=None if prebuilt is None else prebuilt.factors,
        )
        # once, so the layers every compressed network shares with it are already there
        network.to(evaluator.device)
        if runtime.batch_size is None:  # by the network's activation memory on this device
            choice = default_batch_size(network, spec.input_size, evaluator.device, amp=runtime.amp)
            evaluator.batch_size = choice.batch_size
            logger.info(choice.describe(evaluator.device))
        bounds = compressor.bounds
        if config.bounds is not None:
            bounds = torch.tensor(config.bounds, dtype=torch.float64).reshape(2, 1).expand(2, compressor.dim).clone()
        return cls(config, spec, network, compressor, evaluator, bounds, fingerprints)

    def prebuilt(self) -> Prebuilt:
        """This setup's weights and factors (on the CPU), to build the same setup elsewhere."""
        state = {name: tensor.detach().cpu() for name, tensor in self.network.state_dict().items()}
        factors = [_to_cpu(layer.factors) for layer in self.compressor.factors]
        return Prebuilt(state, factors, self.fingerprints.get("weights"))

    def calibration_batches(self, size: int = CALIBRATION_SIZE) -> Iterator[Tensor]:
        """Up to ``size`` validation inputs (never their labels), a fixed seeded subset, in the
        evaluator's batches on the network's device; loaded lazily, batch by batch."""
        indices = torch.randperm(len(self.evaluator), generator=torch.Generator().manual_seed(DATA_SEED))[:size]
        device = next(self.network.parameters()).device
        for chunk in indices.sort().values.split(self.evaluator.batch_size):
            yield self.evaluator.dataset.get(chunk)[0].to(device)

    def scale_knots(self, warp: str) -> tuple[list[list[float]], list[list[float]]]:
        """The known input scale warp ``warp`` (a key of :data:`~compressbo.compression.energy.SCALES`)
        starts from: per layer, its ``theta`` rank knots and log energy fractions there."""
        return SCALES[warp](self.compressor, self.calibration_batches)

    def objective(self, samples: int | Callable[[int], int] | None = None) -> CompressionObjective:
        """The objective ``ratio + gamma * error`` (or distill) with ``m`` from ``samples``.

        Args:
            samples: ``m``, or a schedule ``evaluation index -> m``; default ``config.samples``
                (its first value for a ``START:END`` range).
        """
        return CompressionObjective(
            self.compressor,
            self.evaluator,
            gamma=self.config.gamma,
            objective=self.config.objective,
            cost=self.config.cost,
            samples=samples if samples is not None else samples_range(self.config.samples)[0],
            reference=self.network,
        )


@dataclass(frozen=True)
class Prebuilt:
    """What one process loaded and decomposed, for others to reuse (:meth:`CompressionSetup.prebuilt`).

    Attributes:
        state_dict: The network's weights (CPU tensors).
        factors: Every compressed layer's full decomposition, in the spec's order (CPU tensors).
        weights_fingerprint: The weights' fingerprint as the loading process computed it.
    """

    state_dict: dict[str, torch.Tensor]
    factors: list[Any]
    weights_fingerprint: Any = None


def _to_cpu(factors: Any) -> Any:
    """A decomposition (a dataclass of tensors) with every tensor on the CPU."""
    moved = {
        field.name: (value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        for field in dataclasses.fields(factors)
        for value in [getattr(factors, field.name)]
    }
    return dataclasses.replace(factors, **moved)


def resolve_weights(config: ProblemConfig, spec: NetworkSpec) -> str | None:
    """``config.weights`` or the spec's; ``"train"`` becomes FC3 trained on first use and cached."""
    weights = config.weights or spec.weights
    if weights == "train":
        from compressbo.compression.training import pretrained_fc3_weights

        # logs its validation error, and whether it trained or came from the cache
        return str(pretrained_fc3_weights(spec.name, config.data or spec.dataset, DATA_SEED).path)
    if weights == "random":
        logger.warning("weights random: the network is untrained, so its accuracy is meaningless")
    return weights
