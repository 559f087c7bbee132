"""The compressor: ``theta -> compressed network`` by truncating cached per-layer factors.

:class:`Compressor` decomposes every listed layer once (or loads the factors from the disk
cache) and then builds :class:`CompressedNetwork` objects for any ``theta`` by truncation.

A layer whose ``theta`` is at the top of the box (``theta >= 1``), or whose ranks give a
factorization no smaller than the layer itself, is not factorized: the compressed network
keeps the original module (its parameters shared, exactly as they are), with ratio 1, FLOPs
ratio 1 and no approximation error (:func:`~compressbo.compression.lowrank.ranks.layer_ranks`).
At ``theta = 1`` for every layer the compressed network computes exactly what the original does.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from compressbo.exceptions import SettingError, SpecError
from compressbo.compression.lowrank import (
    check_scheme,
    FactorCache,
    LayerFactors,
    Ranks,
    check_ranks,
    factorized_macs,
    full_macs,
)
from compressbo.compression.cost import CompressionCost, check_cost
from compressbo.compression.spec import NetworkSpec
from compressbo.compression.build import check_layers
from compressbo.compression.lowrank._params import resolve_threads
from compressbo.progress import progress_bar

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class LayerRecord:
    """What happened to one compressible layer.

    Attributes:
        name: Module name.
        method: ``"svd"``, ``"tucker2"`` or ``"vh"``.
        full_ranks: Full rank(s) of the factorization.
        ranks: Chosen rank(s).
        params_before: Parameters of the original layer.
        params_after: Parameters of the replacement.
        ratio: ``params_after / params_before``.
        macs_before: Multiply-accumulates of the original layer for ``spec.input_size``.
        macs_after: Multiply-accumulates of the replacement.
        kept: The original layer is kept unchanged (``theta >= 1``, or ranks whose factorization
            is no smaller than the layer); then ``ranks == full_ranks``, ``ratio == 1`` and
            ``macs_after == macs_before``.
    """

    name: str
    method: str
    full_ranks: Ranks
    ranks: Ranks
    params_before: int
    params_after: int
    ratio: float
    macs_before: int
    macs_after: int
    kept: bool = False


@dataclass(frozen=True)
class CompressedNetwork:
    """A compressed network and its compression figures.

    Attributes:
        module: Plain ``nn.Module`` in eval mode. Layers that were not replaced SHARE their
            parameters with the original network: ``copy.deepcopy`` it before fine-tuning.
        ranks: Rank(s) per compressible layer (``int`` or ``(R_out, R_in)``).
        ratio: Parameters of the compressed layers / the same layers originally (the objective's ratio).
        model_ratio: Parameters of the whole compressed model / the original model.
        flops_ratio: Conv/Linear multiply-accumulates of the whole model for ``spec.input_size``,
            compressed / original.
        layers: Per-layer records.
    """

    module: nn.Module
    ranks: list[Ranks]
    ratio: float
    model_ratio: float
    flops_ratio: float
    layers: tuple[LayerRecord, ...]

    @property
    def layers_flops_ratio(self) -> float:
        """Multiply-accumulates of the compressed layers / the same layers originally."""
        return sum(r.macs_after for r in self.layers) / sum(r.macs_before for r in self.layers)

    def cost(self, metric: str = "params") -> float:
        """The exact cost of this compression: ``ratio`` (``params``) or ``layers_flops_ratio`` (``flops``)."""
        check_cost(metric)
        return self.ratio if metric == "params" else self.layers_flops_ratio


class Compressor:
    """Turns ``theta`` (one continuous parameter per compressible layer) into compressed networks.

    Every layer is decomposed once (or its factors are read from the disk cache, keyed by
    the weights' hash); :meth:`compress` and :meth:`build` then only truncate the factors.

    Args:
        network: The network (as returned by :func:`build_network`).
        spec: Its spec.
        scheme: Rank scheme (``"params"`` or ``"plain"``); ``None`` for ``spec.scheme``.
        method: Factorization for all layers (e.g. ``"vh"`` for VGG-16); ``None`` for the spec's.
        cache_dir: Factor cache directory; ``None`` for ``factors/`` in :func:`compressbo.files.user_cache_dir`,
            ``False`` for no disk cache.
        threads: Torch threads of the one-time decomposition and of the HOOI refinement;
            ``None`` for :func:`~compressbo.compression.lowrank._params.resolve_threads` (the
            machine's free cores, never more than this process's torch threads). Building
            compressed networks in the search always runs on one thread.
        factors: Every layer's full decomposition, in the spec's order (``[f.factors for f in
            other.factors]`` of a compressor of the same network, e.g. shipped from a parallel
            run's driver to its workers): taken as they are, without the cache or a decomposition.

    Both the decomposition and the refinement show a progress bar advancing per layer (on a
    terminal, when compressbo logs at INFO).

    Attributes:
        decomposed: Names of the layers whose factors were computed by this constructor.
        loaded: Names of the layers whose factors came from the disk cache.
    """

    def __init__(
        self,
        network: nn.Module,
        spec: NetworkSpec,
        *,
        scheme: str | None = None,
        method: str | None = None,
        cache_dir: str | os.PathLike | None | bool = None,
        threads: int | None = None,
        factors: Sequence[Any] | None = None,
    ) -> None:
        try:
            self.threads = resolve_threads(threads)
        except ValueError as error:
            raise SettingError(str(error), setting="threads") from None
        self.spec = spec.with_method(method) if method is not None else spec
        self.scheme = check_scheme(scheme or self.spec.scheme)
        self.network = network
        modules = check_layers(network, self.spec)
        if factors is not None:  # decomposed elsewhere (a parallel run's driver): no cache, no decomposition
            if len(factors) != len(modules):
                raise SpecError(f"{self.spec.name}: {len(factors)} layers' factors given for {len(modules)} layers")
            factors = list(factors)
        cache = FactorCache(cache_dir if factors is None else False)
        self.factors: list[LayerFactors] = []
        self.decomposed: list[str] = []
        self.loaded: list[str] = []
        bar = progress_bar(total=len(modules), desc=f"{self.spec.name} factors ({self.threads} threads)", unit="layer")
        with bar:
            for layer, module in zip(self.spec.layers, modules):
                bar.set_postfix_str(f"{layer.name} {layer.method}", refresh=False)
                computed = cache.computed
                if factors is not None:
                    self.factors.append(LayerFactors(module, layer.method, factors.pop(0)))
                    self.loaded.append(layer.name)
                    bar.update(1)
                    continue
                self.factors.append(cache.get(module, layer.method, threads=self.threads))
                (self.decomposed if cache.computed > computed else self.loaded).append(layer.name)
                bar.update(1)
        self._io = _io_sizes(network, self.spec)
        for layer, module in zip(self.spec.layers, modules):
            if module not in self._io:
                raise SpecError(
                    f"{self.spec.name}: layer '{layer.name}' is not called by the network's forward pass; "
                    "compress only layers the network uses"
                )
        self._costs: dict[tuple[str, str], CompressionCost] = {}
        self._total_params = _unique_params(network)
        self._total_macs = sum(
            _positions(out_hw) * m.weight.numel() for m, calls in self._io.items() for _, out_hw in calls
        )

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.spec.layers]

    @property
    def dim(self) -> int:
        """Number of compressible layers (the search space's dimension ``d``)."""
        return len(self.spec.layers)

    @property
    def bounds(self) -> Tensor:
        """``2 x d`` float64 tensor of per-layer ``theta`` bounds."""
        return self.spec.bounds

    def ranks(self, theta: Sequence[float] | Tensor) -> list[Ranks]:
        """Integer rank(s) per layer for ``theta`` (``d``), under the compressor's scheme."""
        values = torch.as_tensor(theta, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != self.dim:
            raise SpecError(f"theta has {len(values)} values but {self.spec.name} has {self.dim} layers")
        return [factors.ranks(value, self.scheme) for factors, value in zip(self.factors, values)]

    def layer_geometries(self) -> list[tuple]:
        """Per compressible layer ``(geometry, method, calls)``, ``calls`` its ``(in_hw, out_hw)`` sizes."""
        return [(f.geometry, f.method, list(self._io[f.layer])) for f in self.factors]

    def cost_function(self, metric: str = "params") -> CompressionCost:
        """The known cost ``theta -> cost`` (:class:`~compressbo.compression.cost.CompressionCost`):
        ``.exact(theta)`` from the ranks, and called on a ``batch x d`` tensor, the relaxed,
        differentiable cost (a plain callable for the BO side)."""
        key = (metric, self.scheme)
        if key not in self._costs:
            self._costs[key] = CompressionCost.of(self, metric)
        return self._costs[key]

    def cost(self, theta: Sequence[float] | Tensor, metric: str = "params") -> float:
        """The exact cost of ``theta`` (``d``) from its integer ranks, without building a network."""
        return self.cost_function(metric).exact_for_ranks(self.ranks(theta))

    def compress(self, theta: Sequence[float] | Tensor) -> CompressedNetwork:
        """The compressed network for ``theta`` (``d``)."""
        return self.build(self.ranks(theta))

    @property
    def refinable(self) -> bool:
        """Whether :meth:`build` with ``refine=True`` can differ (some layer's method is refinable: Tucker-2)."""
        return any(factors.factorization.refinable for factors in self.factors)

    def build(self, ranks: Sequence[Ranks], *, refine: bool = False) -> CompressedNetwork:
        """The compressed network at explicit per-layer ranks.

        A layer whose ranks give a factorization no smaller than the layer (full ranks among
        them) is kept as the original module, not factorized.

        Args:
            ranks: Rank(s) per compressible layer.
            refine: Refine the Tucker-2 layers' factors by HOOI (seconds per network: for the
                final model, not the search loop). Same ranks, same parameter counts.
        """
        if len(ranks) != self.dim:
            raise SpecError(f"got {len(ranks)} ranks but {self.spec.name} has {self.dim} layers")
        replacements, records = {}, []
        bar = progress_bar(
            total=self.dim, enabled=None if refine else False,
            desc=f"{self.spec.name} HOOI refinement ({self.threads} threads)", unit="layer",
        )  # fmt: skip
        for spec, factors, layer_ranks in zip(self.spec.layers, self.factors, ranks):
            bar.set_postfix_str(spec.name, refresh=False)
            layer_ranks = check_ranks(factors.layer, factors.method, layer_ranks)
            calls = self._io[factors.layer]
            if factors.keeps_original(layer_ranks):
                records.append(_kept_record(spec.name, factors, calls))
                bar.update(1)
                continue
            replacements[spec.name] = factors.build(layer_ranks, refine=refine, threads=self.threads)
            bar.update(1)
            before, after = factors.full_params, factors.params(layer_ranks)
            records.append(
                LayerRecord(
                    name=spec.name,
                    method=factors.method,
                    full_ranks=factors.max_ranks,
                    ranks=layer_ranks,
                    params_before=before,
                    params_after=after,
                    ratio=after / before,
                    macs_before=sum(full_macs(factors.geometry, out_hw) for _, out_hw in calls),
                    macs_after=sum(
                        factorized_macs(factors.geometry, factors.method, layer_ranks, in_hw, out_hw)
                        for in_hw, out_hw in calls
                    ),
                )
            )
        bar.close()
        params_before = sum(r.params_before for r in records)
        params_after = sum(r.params_after for r in records)
        macs_delta = sum(r.macs_after - r.macs_before for r in records)
        module = replace_layers(self.network, replacements).eval()
        return CompressedNetwork(
            module=module,
            ranks=[r.ranks for r in records],
            ratio=params_after / params_before,
            model_ratio=_unique_params(module) / self._total_params,
            flops_ratio=(self._total_macs + macs_delta) / self._total_macs,
            layers=tuple(records),
        )


def _kept_record(name: str, factors: LayerFactors, calls: list[tuple[tuple[int, int], tuple[int, int]]]) -> LayerRecord:
    """The record of a layer kept as it is: full ranks, ratio exactly 1, its own MACs."""
    macs = sum(full_macs(factors.geometry, out_hw) for _, out_hw in calls)
    params = factors.full_params
    return LayerRecord(
        name=name,
        method=factors.method,
        full_ranks=factors.max_ranks,
        ranks=factors.max_ranks,
        params_before=params,
        params_after=params,
        ratio=1.0,
        macs_before=macs,
        macs_after=macs,
        kept=True,
    )


def _positions(hw: tuple[int, int]) -> int:
    return hw[0] * hw[1]


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (float32 if none): its inputs' dtype."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _unique_params(module: nn.Module) -> int:
    """Parameters of ``module``, each storage counted once (tied weights, shared aliases)."""
    return sum({p.data_ptr(): p.numel() for p in module.parameters()}.values())


def _io_sizes(network: nn.Module, spec: NetworkSpec) -> dict[nn.Module, list[tuple[tuple[int, int], tuple[int, int]]]]:
    """Input and output spatial sizes of every call of every Conv2d/Linear for one ``spec.input_size`` input.

    Runs the network once on the ``meta`` device (shapes only, no arithmetic), in the dtype of
    its parameters. A Linear's size is ``(positions, 1)``, ``positions`` being the product of
    its inner dimensions. A module called twice has two entries.
    """
    sizes: dict[nn.Module, list[tuple[tuple[int, int], tuple[int, int]]]] = {}

    def spatial(tensor: Tensor, module: nn.Module) -> tuple[int, int]:
        if isinstance(module, nn.Conv2d):
            return tuple(tensor.shape[-2:])
        return (math.prod(tensor.shape[1:-1]), 1)

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        sizes.setdefault(module, []).append((spatial(inputs[0], module), spatial(output, module)))

    handles = [m.register_forward_hook(record) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tensors = [*network.named_parameters(), *network.named_buffers()]
    state = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors}
    try:
        with torch.no_grad():
            functional_call(network, state, (torch.empty(1, *spec.input_size, device="meta", dtype=parameter_dtype(network)),))
    except Exception as error:
        raise SpecError(
            f"{spec.name}: input_size {list(spec.input_size)} does not fit the network ({error})".split("\n")[0]
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def replace_layers(module: nn.Module, replacements: dict[str, nn.Module], prefix: str = "") -> nn.Module:
    """A structural copy of ``module`` with submodules replaced; parameters are shared, not copied.

    Args:
        module: The original network (left unchanged).
        replacements: New submodules by dotted name, e.g. ``{"features.0": nn.Sequential(...)}``.
        prefix: Dotted name of ``module`` inside the root (recursion).

    Every module object is shallow-copied: its own ``_modules``, ``_buffers`` and hook dicts,
    and its own ``nn.Parameter`` objects viewing the original's storage. So ``.train()``,
    ``.to(...)``, ``.double()``, hooks or replacing children on the copy leave the original
    untouched, and building costs microseconds per module; in-place updates of the shared
    storage (an optimizer step) do reach the original.
    """
    clone = copy.copy(module)
    clone._parameters = {name: _alias(p) for name, p in module._parameters.items()}
    clone._buffers = dict(module._buffers)
    for name, value in vars(module).items():
        if "hooks" in name and isinstance(value, dict):
            setattr(clone, name, type(value)(value))
    clone._modules = {}
    for name, child in module._modules.items():
        path = f"{prefix}{name}"
        if path in replacements:
            clone._modules[name] = replacements[path]
        elif child is not None:
            clone._modules[name] = replace_layers(child, replacements, f"{path}.")
        else:
            clone._modules[name] = None
    return clone


def _alias(parameter: nn.Parameter | None) -> nn.Parameter | None:
    """A new ``nn.Parameter`` on the same storage (``None`` stays ``None``)."""
    return None if parameter is None else nn.Parameter(parameter.data, requires_grad=parameter.requires_grad)
