"""Write safetensors shards tensor by tensor, plus the shard index; and make output directories atomic.

The plan knows every output tensor's name, dtype and shape before any data exists, so each shard's
header is written first and the data streamed after it: nothing is held in memory but the tensor
being written. Files land in a temporary sibling directory that is renamed into place only when
everything is complete, so a failed or killed run never leaves a partial output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ..errors import (
    OutputExistsError,
    OutputHoldsInputError,
    OutputNotOursError,
    OutputNotWritableError,
    OutputSpaceError,
    PlanError,
    RecipeError,
)
from .dtypes import DTYPES, dtype_code
from .index import INDEX_FILE, SINGLE_FILE

if TYPE_CHECKING:
    import torch

__all__ = [
    "OutputTensor",
    "ShardedWriter",
    "atomic_output_dir",
    "pack_in_order",
    "parse_size",
    "pid_alive",
    "shard_layout",
    "temporary_sibling",
]

T = TypeVar("T")

_TMP_MARK = ".hubmerge-tmp-"
_OLD_MARK = ".hubmerge-old-"
_PLACE_TRIES = 3  # --overwrite merges to one place finishing at the same moment (see _take_place)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].bits // 8


def parse_size(size: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count -> bytes; anything else is a RecipeError."""
    text = str(size).strip().upper().replace(" ", "")  # an int reads as its digits; True as "TRUE"
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "B": 1}
    number, factor = next(((text[: -len(unit)], f) for unit, f in units.items() if text.endswith(unit)), (text, 1))
    try:
        nbytes = float(number) * factor
    except ValueError:
        nbytes = math.nan
    if not math.isfinite(nbytes):
        raise RecipeError(f"cannot read size {size!r}; write it like 5GB, 500MB or 2GiB")
    if int(nbytes) <= 0:
        raise RecipeError(f"size {size!r} must be positive")
    return int(nbytes)


def pack_in_order(items: Sequence[T], limit: int, size: Callable[[T], int]) -> list[list[T]]:
    """Consecutive runs of ``items`` of at most ``limit`` bytes; an item larger than ``limit`` runs alone."""
    runs: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        if current and total + size(item) > limit:
            runs.append(current)
            current, total = [], 0
        current.append(item)
        total += size(item)
    if current:
        runs.append(current)
    return runs


def shard_layout(tensors: Sequence[OutputTensor], max_shard_size: int) -> list[list[OutputTensor]]:
    """Fill shards in order up to ``max_shard_size`` bytes; a larger tensor gets a shard of its own."""
    return pack_in_order(tensors, max_shard_size, lambda t: t.nbytes) or [[]]


def _header_bytes(shard: Sequence[OutputTensor], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for tensor in shard:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data start to 8 bytes, like the reference writer
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Write ``tensors`` (in this order) into ``directory`` as one file or shards plus an index.

    Call ``write(name, tensor)`` once per tensor in the declared order, then ``close()``.
    """

    def __init__(
        self,
        directory: Path,
        tensors: Sequence[OutputTensor],
        *,
        max_shard_size: int,
        metadata: dict[str, str] | None = None,
        basename: str = SINGLE_FILE,
    ) -> None:
        self.directory = directory
        self.shards = shard_layout(tensors, max_shard_size)
        self.metadata = {"format": "pt", **(metadata or {})}
        stem = basename.removesuffix(".safetensors")
        count = len(self.shards)
        self.filenames = (
            [basename] if count == 1 else [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self.index_name = f"{basename}.index.json" if basename != SINGLE_FILE else INDEX_FILE
        self._order = [(s, t) for s, shard in enumerate(self.shards) for t in shard]
        self._position = 0
        self._shard = -1
        self._file: BinaryIO | None = None

    def _open_shard(self, number: int) -> BinaryIO:
        if self._file is not None:
            self._file.close()
        self._shard = number
        handle = open(self.directory / self.filenames[number], "wb")  # noqa: SIM115 - closed in close()
        handle.write(_header_bytes(self.shards[number], self.metadata))
        self._file = handle
        return handle

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` as ``name``; it must be the next tensor of the plan, with its dtype and shape."""
        if self._position >= len(self._order):
            raise PlanError(f"writer: unexpected tensor {name!r}; every planned tensor was already written")
        shard_no, expected = self._order[self._position]
        if name != expected.name:
            raise PlanError(f"writer: expected tensor {expected.name!r} next, got {name!r}")
        if tuple(tensor.shape) != expected.shape or dtype_code(tensor.dtype) != expected.dtype:
            raise PlanError(
                f"writer: tensor {name!r} is {dtype_code(tensor.dtype)}{list(tensor.shape)}, "
                f"planned {expected.dtype}{list(expected.shape)}"
            )
        handle = self._file if shard_no == self._shard else self._open_shard(shard_no)
        assert handle is not None
        if expected.nbytes:
            import torch

            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            handle.write(memoryview(data))
        self._position += 1

    def close(self) -> list[str]:
        """Finish the last shard and write the index; return the files written."""
        if self._position != len(self._order):
            missing = [t.name for _, t in self._order[self._position :]]
            raise PlanError(f"writer: {len(missing)} planned tensor(s) were never written, first {missing[0]!r}")
        if self._file is None:  # an empty plan still gets its (empty) file
            self._open_shard(0)
        assert self._file is not None
        # No fsync: the atomic rename already protects against crashes and kills; durability
        # against power loss is the filesystem's job and would cost seconds per GB here.
        self._file.close()
        self._file = None
        written = list(self.filenames)
        if len(self.filenames) > 1:
            index = {
                "metadata": {"total_size": sum(t.nbytes for _, t in self._order)},
                "weight_map": {t.name: self.filenames[s] for s, t in self._order},
            }
            (self.directory / self.index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
            written.append(self.index_name)
        return written

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (its leftovers must not be cleaned up yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str, mark: str) -> int | None:
    try:
        return int(name.split(mark, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def temporary_sibling(target: Path) -> Path:
    """A new name beside ``target`` for work on it, which ``clean_stale`` removes once this process is gone."""
    target = target.absolute()
    return target.parent / f".{target.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def clean_stale(target: Path) -> None:
    """Remove what killed runs left beside ``target``; bring back an output a killed run had moved aside."""
    parent, prefix = target.parent, f".{target.name}"
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        for mark in (_TMP_MARK, _OLD_MARK):
            if entry.name.startswith(prefix + mark):
                pid = _owner_pid(entry.name, mark)
                if pid is not None and not pid_alive(pid):
                    if mark == _OLD_MARK and not target.exists():
                        entry.rename(target)  # killed between the two renames: keep the old output
                    else:
                        shutil.rmtree(entry, ignore_errors=True)


def _is_nonempty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_output(target: Path, *, overwrite: bool, keep: Mapping[Path, str] | None = None,
                 mark: str | None = None) -> None:
    """Refuse an existing non-empty output unless ``overwrite``, and always one that is or holds the
    home or current directory or a path of ``keep`` (what the merge reads, each with what it is), or,
    given ``mark`` (the file every output of the command holds), one that lacks it: the output replaces
    the folder whole. Called before any work starts."""
    if not target.exists():
        return
    outputs = {Path(os.path.abspath(target)), target.resolve()}  # as written, and where its links lead
    for path, what in {**_standing_folders(), **(keep or {})}.items():
        for held in {Path(os.path.abspath(path)), path.resolve()}:
            if any(held == out or out in held.parents for out in outputs):
                raise OutputHoldsInputError(os.path.abspath(target), str(held), what)
    if _is_nonempty(target) and mark is not None and not (target / mark).is_file():
        raise OutputNotOursError(str(target), mark, is_file=not target.is_dir())  # the user's files
    if _is_nonempty(target) and not overwrite:
        raise OutputExistsError(str(target), is_file=not target.is_dir())


def _standing_folders() -> dict[Path, str]:
    """The home and current directories, where this process can tell them."""
    found: dict[Path, str] = {}
    home = os.path.expanduser("~")
    if home != "~":
        found[Path(home)] = "your home directory"
    with contextlib.suppress(OSError):  # the current directory was deleted
        found[Path.cwd()] = "the current directory"
    return found


# Room left for what is written besides the tensors: safetensors headers, configs, recipe, card.
_SPACE_MARGIN = 2**20


def check_space(target: Path, tensor_bytes: int) -> None:
    """Refuse an output its disk cannot hold, before any read: a full disk met at the last shard
    would waste the whole merge (the partial output is removed either way)."""
    from ..plan_summary import human_bytes

    folder = target
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if tensor_bytes + _SPACE_MARGIN > free:
        raise OutputSpaceError(str(target), human_bytes(tensor_bytes), human_bytes(free))


@contextlib.contextmanager
def atomic_output_dir(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` only if the block completes.

    On error the temporary directory, and the parent folders made for it, are removed and ``target`` is
    left exactly as it was. Without ``overwrite``, an output that appeared meanwhile (a second merge to
    the same place) is an ``OutputExistsError`` then, not replaced.
    """
    target = target.absolute()
    clean_stale(target)
    check_output(target, overwrite=overwrite)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # to remove on failure
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = target.parent / f".{target.name}{_TMP_MARK}{tag}"
    moved_aside: list[Path] = []  # what stood at ``target`` (with overwrite), the latest last
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            why = (exc.strerror or str(exc)).lower()
            raise OutputNotWritableError(str(target), f"its folder '{target.parent}' cannot be made or written ({why})",
                                         "Write it to a folder you may write to.") from None
        try:
            yield tmp
        except OSError as exc:  # a full disk met while writing, though check_space passed (others wrote)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise OutputNotWritableError(str(target), "its disk filled up while it was written",
                                         "Free some space, or write it to another disk.") from None
        _take_place(tmp, target, moved_aside, tag, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if moved_aside and not target.exists():  # the old output was moved aside: it stays the output
            moved_aside.pop().rename(target)
        for aside in moved_aside:
            _remove(aside)
        for folder in made:  # the nearest first; one that holds anything else stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for aside in moved_aside:
        _remove(aside)


def _take_place(tmp: Path, target: Path, moved_aside: list[Path], tag: str, *, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; with ``overwrite``, what stands there is first moved aside (into
    ``moved_aside``). Another ``--overwrite`` merge to the same place may move it away or put its own output
    there between the two renames: the later merge replaces that one too (a few tries), as it would a moment
    later; it raised a bare ``FileNotFoundError`` before.

    Raises:
        OutputExistsError: without ``overwrite``, something appeared at ``target`` meanwhile (another merge's
            output), which is not replaced.
        OutputNotWritableError: with ``overwrite``, other merges kept putting their outputs there.
    """
    for attempt in range(_PLACE_TRIES):
        if overwrite:
            aside = target.parent / f".{target.name}{_OLD_MARK}{tag}-{attempt}"
            with contextlib.suppress(FileNotFoundError):  # moved away meanwhile by the other merge
                target.rename(aside)
                moved_aside.append(aside)
        try:  # a rename onto a non-empty folder or a file fails, at once and atomically
            tmp.rename(target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not overwrite:
                raise OutputExistsError(str(target), is_file=target.is_file()) from None
    raise OutputNotWritableError(str(target), f"other merges put their outputs there {_PLACE_TRIES} times while "
                                 "this one took its place", "Run one merge at a time into one output.")


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
