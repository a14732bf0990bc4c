"""The commit marker: how many commits Titanic acknowledged, kept in a small file beside the database.

The database counts its own commits (a row bumped in every transaction). The
marker is a second, independent record of that number: should the database
come back with fewer commits than the marker remembers (a deleted or damaged
``-wal`` file, a truncated or replaced file), acknowledged work is gone, and
Titanic refuses to serve instead of starting half empty.

The marker costs no fsync of its own: it is overwritten in place after each
group commit (one ``pwrite`` of a few bytes, written back by the kernel in its
own time). After a power cut it may lag behind the database, which is safe:
only a database *behind* the marker is refused. It is created once with a
full fsync, so it is never found empty after a crash.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

from raspy.atomic import atomic_write
from raspy.errors import RaspyError

#: The record: 20 decimal digits, a space, the CRC-32 of the digits in hex, a newline (fixed width: overwritten in place).
_WIDTH = 20 + 1 + 8 + 1


class JournalDamaged(RaspyError):
    """The database does not hold what Titanic acknowledged; nothing is served until the owner decides."""


def _record(commits: int) -> bytes:
    digits = f"{commits:020d}".encode()
    return digits + b" " + f"{zlib.crc32(digits):08x}".encode() + b"\n"


class CommitMarker:
    """``<database>.commits``: the number of the last acknowledged commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> int | None:
        """The number the marker holds, ``None`` when there is no marker; an unreadable one raises."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalDamaged(f"{self.path.name} cannot be read: {exc}") from None
        digits, _, crc = data[:_WIDTH].rstrip(b"\n").partition(b" ")
        if len(data) != _WIDTH or not digits.isdigit() or crc != f"{zlib.crc32(digits):08x}".encode():
            raise JournalDamaged(f"{self.path.name} (the commit marker) is damaged: {data[:40]!r}")
        return int(digits)

    def open(self, commits: int) -> None:
        """Write ``commits`` durably (a new file, fsynced) and keep the file open for :meth:`update`."""
        atomic_write(self.path, _record(commits))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)

    def update(self, commits: int) -> None:
        """Overwrite the number in place, without an fsync (see the module's note)."""
        if self._fd is not None:
            os.pwrite(self._fd, _record(commits), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
