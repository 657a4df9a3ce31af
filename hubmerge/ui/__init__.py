"""The web app (Gradio): ``build_app`` / ``launch_app``; also the Hugging Face Space's entry.

Gradio loads on first use of ``build_app``/``launch_app``, so importing the form helpers stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import AppHandlers, build_app, launch_app

__all__ = ["AppHandlers", "build_app", "launch_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'hubmerge.ui' has no attribute {name!r}")
