"""Merge methods: one small pure function each, registered with a typed parameter schema."""

from ._registry import LinearForm, MergeMethod, ParamSpec, get_method, list_methods, register

# Importing the modules registers their methods.
from . import linear, task_vectors, model_stock, slerp  # noqa: F401  (isort: skip)

__all__ = ["LinearForm", "MergeMethod", "ParamSpec", "get_method", "list_methods", "register"]
