"""The compression side: networks, their low-rank factors and the subsampled evaluator; nothing of GPs.

- :mod:`~compressbo.compression.spec`: the TOML network spec.
- :mod:`~compressbo.compression.build`: the network and its weights.
- :mod:`~compressbo.compression.lowrank`: the factorizations (SVD, Tucker-2, vh), ranks, the factor cache.
- :mod:`~compressbo.compression.compressor`: ``theta -> compressed network``.
- :mod:`~compressbo.compression.export`: save and load a compressed network.
- :mod:`~compressbo.compression.data`: validation sets (digits, MNIST, ImageNet folders).
- :mod:`~compressbo.compression.evaluator`: top-1 error on a random subsample, with its variance.
- :mod:`~compressbo.compression.objective`: ``ratio + gamma * error`` and its known variance.

Example:
    >>> from compressbo.compression import Compressor, build_network, load_spec
    >>> spec = load_spec("fc3")
    >>> compressor = Compressor(build_network(spec, "random"), spec)  # doctest: +SKIP
"""

from compressbo.compression.build import build_network
from compressbo.compression.compressor import CompressedNetwork, Compressor
from compressbo.compression.export import load_compressed, save_compressed
from compressbo.compression.spec import NetworkSpec, load_spec

__all__ = ["CompressedNetwork", "Compressor", "NetworkSpec", "build_network", "load_compressed", "load_spec", "save_compressed"]
