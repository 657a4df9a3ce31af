"""A local Hugging Face Hub-compatible server: the embedded default of the demo and the tests.

The real, unmodified ``huggingface_hub`` client talks to it through ``HF_ENDPOINT``.
"""

from .app import create_app
from .faults import FaultPolicy, HubStats
from .server import LocalHub, load_tokens, serve

__all__ = ["FaultPolicy", "HubStats", "LocalHub", "create_app", "load_tokens", "serve"]
