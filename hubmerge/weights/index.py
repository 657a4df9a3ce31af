"""A model's safetensors layout: which file holds which tensor, from the shard index or a single file.

Reads only the index JSON and the headers; validates that the index cannot point outside the model
(``../``, absolute paths) and that it agrees with the shard headers.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..errors import HeaderParseError, ModelFilesNotFoundError, ShardIndexError, listed
from ..json_files import parse_json
from .header import SafetensorsHeader, TensorInfo, read_header
from .sources import WeightSource

__all__ = ["INDEX_FILE", "SINGLE_FILE", "ModelWeights", "TensorLocation", "no_weights_message", "open_weights"]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorLocation:
    """One tensor of one model: the file and the absolute byte range that hold it."""

    file: str
    offset: int
    info: TensorInfo

    @property
    def nbytes(self) -> int:
        return self.info.nbytes


@dataclass(frozen=True)
class ModelWeights:
    """Every tensor of a model and where it lives, from headers alone."""

    source: WeightSource
    files: tuple[str, ...]
    headers: dict[str, SafetensorsHeader]
    tensors: dict[str, TensorLocation]

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def total_bytes(self) -> int:
        return sum(h.file_size for h in self.headers.values())


def safe_shard_name(where: str, name: object) -> str:
    """``name`` from a shard index, when it names a .safetensors file inside the model's folder."""
    if not isinstance(name, str) or not name:
        raise ShardIndexError(where, f"shard file name {name!r} is not a string")
    normalised = posixpath.normpath(name)
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")
        or normalised.startswith("..")
        or normalised == "."
        or "\x00" in name
    ):
        raise ShardIndexError(where, f"shard file {name!r} points outside the model directory")
    if not normalised.endswith(".safetensors"):
        raise ShardIndexError(where, f"shard file {name!r} is not a .safetensors file")
    return normalised


def _one_value_per_key(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A JSON object hook refusing a key given twice with two values (a tensor listed in two shards, two
    'weight_map's): json keeps the last, so the error named the wrong shard, or the first map's tensors were
    left out unsaid. A key repeated with the same value, as some writers do, is harmless."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out and out[key] != value:
                given = f": in {out[key]} and in {value}" if isinstance(value, str) else " with two values"
                raise ShardIndexError(where, f"{key!r} is listed twice{given}")
            out[key] = value
        return out

    return hook


def _weight_map(source: WeightSource) -> dict[str, str]:
    where = source.where(INDEX_FILE)
    index = parse_json(source.read_file(INDEX_FILE), lambda problem: ShardIndexError(where, problem),
                       object_pairs_hook=_one_value_per_key(where))
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise ShardIndexError(where, "it has no 'weight_map' object")
    weight_map = index["weight_map"]
    if not weight_map:
        raise ShardIndexError(where, "'weight_map' is empty")
    return {str(tensor): safe_shard_name(where, shard) for tensor, shard in weight_map.items()}


def _choose_files(source: WeightSource, listing: list[str]) -> tuple[list[str], dict[str, str] | None]:
    """The files that hold the model: ``model.safetensors`` where there is one beside an index (shards an
    earlier upload left, or the reverse), as transformers' ``from_pretrained`` and huggingface_hub read it, so
    the merge reads the weights that evaluating or loading the input gives."""
    if SINGLE_FILE in listing:
        return [SINGLE_FILE], None
    if INDEX_FILE in listing:
        weight_map = _weight_map(source)
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if s not in listing]
        if missing:
            raise ModelFilesNotFoundError(
                f"{source.where(INDEX_FILE)} names shard(s) that do not exist: {', '.join(missing)}",
                model=source.label,
            )
        return shards, weight_map
    top_level = [f for f in listing if f.endswith(".safetensors") and "/" not in f]
    if len(top_level) == 1:
        return top_level, None
    message = no_weights_message(source.label, listing, repo_id=source.repo_id)
    raise ModelFilesNotFoundError(message, model=source.label)


def no_weights_message(label: str, listing: Sequence[str], *, repo_id: str | None = None) -> str:
    """Why no weights were found in ``listing`` (a model's files), and the likely fix: models one folder down
    (a folder of fine-tunes given for one of them; in Hub repo ``repo_id``, which a recipe cannot name, a
    download), or weights in a format hubmerge does not read."""
    top_level = [f for f in listing if "/" not in f]
    safetensors = [f for f in top_level if f.endswith(".safetensors")]
    found = ", ".join(safetensors) or "no .safetensors file"
    message = f"{label}: expected {SINGLE_FILE} or {INDEX_FILE}, found {found}."
    nested = sorted({f.rsplit("/", 1)[0] for f in listing
                     if f.count("/") == 1 and f.endswith((f"/{SINGLE_FILE}", f"/{INDEX_FILE}"))})
    if nested and not safetensors and repo_id is not None:
        return (f"{message} It holds models one folder down ({listed(nested, 5)}), which a recipe cannot name in a "
                f"Hub repo: download one with `hf download {repo_id} --include '{nested[0]}/*' --local-dir DIR` and "
                f"give DIR/{nested[0]}.")
    if nested and not safetensors:
        return (f"{message} It holds models one folder down ({listed(nested, 5)}): give those, not the folder "
                "that holds them.")
    if safetensors:  # several, and no index says which tensors each holds
        return f"{message} Without {INDEX_FILE}, hubmerge reads a model from one file only: keep one, or add the index."
    message += " hubmerge reads safetensors weights only"
    if any(f.endswith((".pth", ".pt")) for f in top_level):
        return f"{message}; make a torchvision ResNet checkpoint a model folder with `hubmerge export-resnet`."
    if any(f.endswith(".bin") for f in top_level):
        return f"{message}; convert .bin checkpoints with `save_pretrained(safe_serialization=True)`."
    return f"{message}."


def _tied(
    headers: dict[str, SafetensorsHeader], tensors: dict[str, TensorLocation]
) -> dict[str, TensorLocation]:
    """Tied weights saved once: safetensors' ``save_model`` keeps one name of a shared tensor and records each
    one it dropped in the metadata as ``{dropped: kept}`` (``load_model`` ties them back). Each dropped name
    reads the kept tensor, so the model lines up with the same model saved whole. Only a name of the kept
    one's kind (``.weight`` for a ``.weight``) is taken: other metadata may name a tensor too."""
    tied: dict[str, TensorLocation] = {}
    for file, head in headers.items():
        for dropped, kept in (head.metadata or {}).items():
            location = tensors.get(kept)
            same_kind = "." in dropped and dropped.rsplit(".", 1)[-1] == kept.rsplit(".", 1)[-1]
            if same_kind and dropped not in tensors and location is not None and location.file == file:
                tied[dropped] = TensorLocation(file, location.offset, replace(location.info, name=dropped))
    return tied


def open_weights(source: WeightSource, *, max_workers: int = 8) -> ModelWeights:
    """Read the layout of the model behind ``source`` from its index and shard headers.

    Args:
        source: the model's files.
        max_workers: shard headers read in parallel (this matters over HTTP).

    Returns:
        ``ModelWeights`` with every tensor's file and byte range.

    Raises:
        ModelFilesNotFoundError: no safetensors weights, or a shard named by the index is missing.
        ShardIndexError: the index is corrupt, escapes the directory or disagrees with the shards.
        HeaderParseError: a shard header is corrupt or truncated.
    """
    files, weight_map = _choose_files(source, source.list_files())

    def header(file: str) -> SafetensorsHeader:
        return read_header(
            lambda offset, length: source.read_range(file, offset, length),
            where=source.where(file),
            file_size=source.file_size(file),
        )

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(files)))) as pool:
        headers = dict(zip(files, pool.map(header, files)))

    tensors: dict[str, TensorLocation] = {}
    for file in files:
        head = headers[file]
        for name, info in head.tensors.items():
            if name in tensors:
                raise HeaderParseError(
                    source.where(file), f"tensor {name!r} also appears in {tensors[name].file}"
                )
            tensors[name] = TensorLocation(file, head.data_start + info.begin, info)

    if weight_map is not None:
        where = source.where(INDEX_FILE)
        for name, file in weight_map.items():
            location = tensors.get(name)
            if location is None or location.file != file:
                raise ShardIndexError(where, f"tensor {name!r} is mapped to {file} but that shard does not hold it")
        unmapped = sorted(set(tensors) - set(weight_map))
        if unmapped:
            raise ShardIndexError(where, f"shards hold tensors the index does not list: {', '.join(unmapped[:10])}")
    tensors.update(_tied(headers, tensors))
    return ModelWeights(source, tuple(files), headers, tensors)
