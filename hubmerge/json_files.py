"""JSON files of models, outputs and reports, read whole: capped in size, and a broken one said in words.

``json.loads`` raises ``ValueError`` for text that is no JSON and ``RecursionError`` for arrays nested past
Python's recursion limit (100,000 ``[`` in a hand-edited or hostile file, well within any size cap): each
reader turns both into its own typed error, so neither ends as an "unexpected error".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["parse_json", "read_json_file"]

#: Builds the caller's error from the problem, e.g. ``"not valid JSON (Expecting value: line 1 column 1)"``.
OnError = Callable[[str], Exception]


def parse_json(text: str | bytes, on_error: OnError,
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``text`` parsed (its objects by ``object_pairs_hook``, as ``json.loads`` takes it, when given).

    Raises:
        ``on_error(problem)``: the text is no JSON (or no UTF-8), or nests too deeply to be parsed.
    """
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise on_error(f"not valid JSON ({exc})") from None
    except RecursionError:  # json.loads recurses once per level
        raise on_error("nested too deeply to be read") from None


def read_json_file(path: Path, on_error: OnError) -> Any:
    """The JSON ``path`` holds; None when there is no such file.

    Raises:
        WeightsError: the file is larger than any config, index or report (see ``check_whole_file``).
        ``on_error(problem)``: as :func:`parse_json`.
    """
    from .weights.sources import check_whole_file

    if not path.is_file():
        return None
    check_whole_file(f"'{path}'", path.stat().st_size)
    return parse_json(path.read_bytes(), on_error)
