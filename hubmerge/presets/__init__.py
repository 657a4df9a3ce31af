"""Built-in recipes: ``hubmerge plan --preset NAME`` and the app's preset menu.

Each preset is a hubmerge recipe YAML shipped with the package, with real Hub repo ids.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnknownPresetError
from ..recipe import Recipe

__all__ = ["known_presets", "load_preset", "preset_path"]

_HERE = Path(__file__).parent


def known_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = _HERE / f"{name}.yaml"
    if not path.is_file():
        raise UnknownPresetError(name, known_presets())
    return path


def load_preset(name: str) -> Recipe:
    """The preset ``name`` as a validated Recipe; UnknownPresetError lists the known names."""
    path = preset_path(name)
    return Recipe.from_yaml(path.read_text(encoding="utf-8"), source=f"preset {name}")
