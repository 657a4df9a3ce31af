"""hubmerge: merge fine-tuned image classifiers from the Hugging Face Hub, tensor by tensor.

    >>> from hubmerge import load_recipe, plan, merge, load_merged
    >>> plan("recipe.yaml")  # from headers only: MergePlan(ties, 9 inputs, tensors: ..., read ..., write ...)
    >>> merge("recipe.yaml", "out/merged")  # or load_recipe(...), changed in code, then merge(recipe, ...)
    >>> model = load_merged("out/merged", task="eurosat")

Heavy modules (torch, transformers) load on first use, so ``import hubmerge`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .engine import merge, plan
    from .recipe import Recipe, load_recipe
    from .vision.loading import load_merged

__version__ = "0.1.0"

__all__ = ["Recipe", "__version__", "errors", "load_merged", "load_recipe", "merge", "plan"]

_LAZY = {
    "Recipe": "hubmerge.recipe",
    "load_recipe": "hubmerge.recipe",
    "plan": "hubmerge.engine",
    "merge": "hubmerge.engine",
    "load_merged": "hubmerge.vision.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubmerge' has no attribute {name!r}")
