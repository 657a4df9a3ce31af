"""Which folder an output is, so that a command writing into it later can tell it is still that one.

``merge --evaluate``, ``evaluate --save``, ``card`` and ``push`` read an output, work for a while, then
write reports or a card into it. Another command's ``merge --overwrite`` to the same place may replace
the folder meanwhile (by renames, so its path stays); results written then would describe a model the
folder no longer holds. A stamp taken when the work starts and checked before each write refuses that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputReplacedError

__all__ = ["OutputStamp"]


@dataclass(frozen=True)
class OutputStamp:
    """The identity (device, inode) of the folder at ``path`` when the stamp was taken."""

    path: Path
    device: int
    inode: int

    @classmethod
    def take(cls, output: str | Path) -> OutputStamp:
        status = os.stat(output)
        return cls(Path(output), status.st_dev, status.st_ino)

    def check(self, what: str) -> None:
        """Raise ``OutputReplacedError`` if ``path`` is no longer the folder stamped; ``what`` would be written."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            raise OutputReplacedError(str(self.path), what, removed=True) from None
        if (status.st_dev, status.st_ino) != (self.device, self.inode):
            raise OutputReplacedError(str(self.path), what)
