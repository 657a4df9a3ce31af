"""Safetensors IO in layers: header -> index -> source (local / HTTP) -> reader + prefetch -> writer (+ behind).

Nothing above this package sees bytes, offsets or HTTP.
"""

from .header import SafetensorsHeader, TensorInfo, parse_header
from .index import ModelWeights, TensorLocation, open_weights
from .sources import LocalSource, WeightSource
from .writer import ShardedWriter, atomic_output_dir

__all__ = [
    "LocalSource",
    "ModelWeights",
    "SafetensorsHeader",
    "ShardedWriter",
    "TensorInfo",
    "TensorLocation",
    "WeightSource",
    "atomic_output_dir",
    "open_weights",
    "parse_header",
]
