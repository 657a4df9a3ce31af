"""Where a model's files come from: a small interface read by byte range.

``LocalSource`` maps a directory's files into memory and hands out zero-copy views of the ranges
asked for (no read copies, no private memory: the bytes stay in the page cache); the Hub source
(``hubmerge.hub.source``) implements the same methods with HTTP Range requests. Nothing above
``weights/`` knows which one it holds: the engine asks for ranges and gets bytes, or typed errors.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from ..errors import ModelFilesNotFoundError, RangeReadError, WeightsError

MAX_WHOLE_FILE = 64 * 2**20  # bytes of a file read whole: above the largest file an output copies (50 MiB)

__all__ = ["LocalSource", "WeightSource", "check_whole_file"]


def check_whole_file(where: str, size: int) -> None:
    """Refuse to read a file of ``size`` bytes whole past ``MAX_WHOLE_FILE`` (a hostile repo's gigabyte
    config.json would be held in memory, and parsed)."""
    if size > MAX_WHOLE_FILE:
        raise WeightsError(f"{where} is {size:,} bytes; a config, index or processor file holds a few kilobytes, "
                           f"and more than {MAX_WHOLE_FILE:,} is not read")


class WeightSource(ABC):
    """A model's files, read by byte range. Thread-safe: readers call it from several threads."""

    #: how the model is named in messages, e.g. ``/data/ft1`` or ``alice/ft1@3f2a…``
    label: str
    #: the pinned commit sha for Hub sources; None for local directories
    revision: str | None = None
    #: the repo of Hub sources (``org/name``); None for local directories
    repo_id: str | None = None

    @abstractmethod
    def list_files(self) -> list[str]:
        """Every file of the model, as POSIX paths relative to its root."""

    @abstractmethod
    def file_size(self, path: str) -> int:
        """Size in bytes of ``path``; ModelFilesNotFoundError when it does not exist."""

    @abstractmethod
    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes of ``path`` starting at ``offset``, or raise RangeReadError."""

    def view(self, path: str, offset: int, length: int) -> memoryview | None:
        """A zero-copy, writable-but-private view of the range, or None when the source cannot map it."""
        return None

    def release(self, path: str, offset: int, length: int) -> None:
        """Hint that a range returned by ``view`` is no longer needed (its pages may be dropped)."""

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        buffer = bytearray(length)
        self.read_into(path, offset, memoryview(buffer))
        return bytes(buffer)

    def owns(self, path: str) -> bool:
        """Whether ``path`` is the model's own file, to be copied into an output that may be published."""
        return True

    def read_file(self, path: str) -> bytes:
        """A whole (small) file such as ``config.json`` or the shard index: one past ``MAX_WHOLE_FILE`` is
        refused rather than read into memory (a hostile repo's gigabyte config.json)."""
        size = self.file_size(path)
        check_whole_file(self.where(path), size)
        return self.read_range(path, 0, size)

    def where(self, path: str) -> str:
        """How to name ``path`` of this model in an error message."""
        return f"{self.label}:{path}"

    def close(self) -> None:
        """Release files or connections. The source may not be used afterwards."""

    def __enter__(self) -> WeightSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _drop_pages(address: int, length: int) -> None:
    """``madvise(MADV_DONTNEED)`` without holding the GIL (unlike ``mmap.madvise``): the merge runs on meanwhile."""
    _libc.madvise(address, length, mmap.MADV_DONTNEED)


def _close_fds(fds: dict[str, int]) -> None:
    """Close the files of a source dropped without ``close()``: a plan only looked at (``print(plan(...))``)
    is never executed or closed, and a loop of them ran out of file descriptors (10 more per plan of 5
    inputs)."""
    for fd in fds.values():
        os.close(fd)
    fds.clear()


class LocalSource(WeightSource):
    """A model directory on local disk: memory-mapped views for tensors, ``os.preadv`` for the rest.

    Maps are private copy-on-write (``ACCESS_COPY``): torch can wrap them without warnings, and a
    stray write could never reach the file. ``release`` drops the mapped pages of a finished range
    (they stay in the page cache), so resident memory does not grow with the model size.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.label = str(root)
        if not self.root.is_dir():
            raise ModelFilesNotFoundError(
                f"model directory '{self.label}' does not exist (or is not a directory)", model=self.label
            )
        self._fds: dict[str, int] = {}
        self._maps: dict[str, tuple[mmap.mmap, int]] = {}
        self._lock = threading.Lock()
        weakref.finalize(self, _close_fds, self._fds)  # an owner that never calls close()

    def _path(self, path: str) -> Path:
        """``path`` inside the directory. The name is checked, not where a symlink in the directory leads: a
        Hugging Face cache snapshot is all symlinks into its ``blobs/``, and links are the owner's choice."""
        name = PurePosixPath(path)
        if not path or name.is_absolute() or ".." in name.parts or "\\" in path or "\x00" in path:
            raise ModelFilesNotFoundError(f"{self.where(path)}: path escapes the model directory", path=path)
        return self.root / name

    def owns(self, path: str) -> bool:
        """False for a link out of the folder (``notes.txt`` -> ``~/.cache/huggingface/token`` in a cloned
        repo); a Hugging Face cache snapshot's links into its repo's ``blobs/`` are its own."""
        target = self._path(path).resolve()
        root = self.root.resolve()
        inside = [root, root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [root]
        return any(target.is_relative_to(folder) for folder in inside)

    def list_files(self) -> list[str]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                files.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return files

    def file_size(self, path: str) -> int:
        resolved = self._path(path)
        try:
            status = resolved.stat()
        except FileNotFoundError:
            raise ModelFilesNotFoundError(f"{self.where(path)}: file not found", model=self.label, path=path) from None
        self._check_regular(path, status.st_mode)
        return status.st_size

    def _check_regular(self, path: str, mode: int) -> None:
        # A FIFO would block the open forever, a directory or device has no meaningful size.
        if not stat.S_ISREG(mode):
            raise ModelFilesNotFoundError(
                f"{self.where(path)}: not a regular file (a directory, pipe or device)", model=self.label, path=path
            )

    def _fd(self, path: str) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                resolved = self._path(path)
                try:
                    fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even on a FIFO
                except FileNotFoundError:
                    raise ModelFilesNotFoundError(
                        f"{self.where(path)}: file not found", model=self.label, path=path
                    ) from None
                try:
                    self._check_regular(path, os.fstat(fd).st_mode)
                except ModelFilesNotFoundError:
                    os.close(fd)
                    raise
                self._fds[path] = fd
            return fd

    def read_into(self, path: str, offset: int, out: memoryview) -> None:
        fd = self._fd(path)
        done, length = 0, len(out)
        while done < length:
            try:
                got = os.preadv(fd, [out[done:]], offset + done)
            except OSError as exc:
                raise RangeReadError(self.where(path), f"read failed: {exc.strerror}", offset=offset, length=length)
            if got == 0:
                raise RangeReadError(
                    self.where(path), "the file ended early (truncated?)", offset=offset, length=length
                )
            done += got

    def _map(self, path: str) -> tuple[mmap.mmap, int]:
        """The file's map and its address."""
        with self._lock:
            found = self._maps.get(path)
        if found is None:
            fd = self._fd(path)
            with self._lock:
                found = self._maps.get(path)
                if found is None:
                    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
                    anchor = ctypes.c_char.from_buffer(mapped)  # a buffer export: let it go before close()
                    found = self._maps[path] = (mapped, ctypes.addressof(anchor))
                    del anchor
        return found

    def view(self, path: str, offset: int, length: int) -> memoryview | None:
        if length == 0:
            return None
        # A file that shrank since planning would crash a mapped read (SIGBUS): check first.
        size = os.fstat(self._fd(path)).st_size
        if offset + length > size:
            raise RangeReadError(self.where(path), "the file ended early (truncated?)", offset=offset, length=length)
        mapped, _ = self._map(path)
        if offset + length > len(mapped):
            raise RangeReadError(self.where(path), "the file changed while reading", offset=offset, length=length)
        return memoryview(mapped)[offset : offset + length]

    def release(self, path: str, offset: int, length: int) -> None:
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the range only
        end = (offset + length) // mmap.PAGESIZE * mmap.PAGESIZE
        with self._lock:  # held throughout: close() must not unmap (and the address be reused) meanwhile
            found = self._maps.get(path)
            if found is not None and end > start:
                _drop_pages(found[1] + start, end - start)

    def close(self) -> None:
        with self._lock:
            for mapped, _ in self._maps.values():
                try:
                    mapped.close()
                except BufferError:
                    pass  # tensors still view it; the map goes when they do
            self._maps.clear()
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
