"""One device's history: a file whose size is fixed when it is created, holding round-robin archives.

Layout (little-endian)::

    header   HEADER_SIZE bytes: magic, version, archive count, creation time, unit,
             then (step, rows, offset) per archive, then the CRC-32 of all of it
    raw      step 0: rows of (t: f64, value: f64), appended in a ring; t == 0 is an empty row
    others   step s: rows of (slot: i64, count: u32, sum, min, max: f64); the readings of
             slot = floor(t / s) go to row slot % rows. A row holding another slot than the
             one asked for, or a count of 0, is empty.

Consolidated rows keep the sum and the count, not a mean of means: every archive is fed
from the raw readings, so its mean, min and max are exact. The space is reserved with
``posix_fallocate`` when the file is created, so a disk that fills later cannot stop a write.
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from raspy.errors import RaspyError

MAGIC = b"RASPYHST"
VERSION = 1
HEADER_SIZE = 256
MAX_ARCHIVES = 8
UNIT_SIZE = 32
_HEAD = struct.Struct(f"<8sHHd{UNIT_SIZE}s")
_ARCHIVE = struct.Struct("<IIQ")
_CRC = struct.Struct("<I")
RAW = struct.Struct("<dd")
ROW = struct.Struct("<qIddd")


class DamagedFile(RaspyError):
    """A history file that cannot be trusted: wrong magic, version, checksum or size."""


@dataclass(frozen=True)
class Archive:
    """``rows`` rows of ``step`` seconds each; step 0 keeps raw readings, the last ``rows`` of them."""

    step: int
    rows: int

    @property
    def row_size(self) -> int:
        return RAW.size if self.step == 0 else ROW.size


@dataclass
class Row:
    """The readings of one slot of a consolidated archive."""

    slot: int
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: "Row") -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @property
    def mean(self) -> float:
        return self.total / self.count

    def pack(self) -> bytes:
        return ROW.pack(self.slot, self.count, self.total, self.low, self.high)


def layout_size(layout: Sequence[Archive]) -> int:
    return HEADER_SIZE + sum(archive.rows * archive.row_size for archive in layout)


def unit_bytes(unit: str | None) -> bytes:
    """A unit as a file holds it: at most UNIT_SIZE bytes of UTF-8."""
    data = (unit or "").encode("utf-8")[:UNIT_SIZE]
    return data.decode("utf-8", "ignore").encode("utf-8")  # never half a character


class HistoryFile:
    """An open history file; not thread-safe (the store serialises access)."""

    def __init__(self, path: Path, fd: int, layout: tuple[Archive, ...], created: float, unit: str) -> None:
        self.path, self.fd, self.layout, self.created, self.unit = path, fd, layout, created, unit
        self.offsets: list[int] = []
        offset = HEADER_SIZE
        for archive in layout:
            self.offsets.append(offset)
            offset += archive.rows * archive.row_size
        self.size = offset

    # -- creating and opening --------------------------------------------

    @classmethod
    def create(cls, path: Path, layout: Sequence[Archive], unit: str | None, now: float) -> "HistoryFile":
        """A new file at ``path``, its whole size reserved, replacing whatever was there."""
        layout = tuple(layout)
        if not 1 <= len(layout) <= MAX_ARCHIVES or layout[0].step != 0 or any(a.step <= 0 for a in layout[1:]):
            raise ValueError("a history has a raw archive (step 0) first, then up to "
                             f"{MAX_ARCHIVES - 1} archives of positive steps")
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, layout_size(layout))
            os.pwrite(fd, cls._header(layout, now, unit_bytes(unit)), 0)
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, fd, layout, now, unit_bytes(unit).decode())

    @staticmethod
    def _header(layout: Sequence[Archive], created: float, unit: bytes) -> bytes:
        body = _HEAD.pack(MAGIC, VERSION, len(layout), created, unit)
        offset = HEADER_SIZE
        for archive in layout:
            body += _ARCHIVE.pack(archive.step, archive.rows, offset)
            offset += archive.rows * archive.row_size
        body += _CRC.pack(zlib.crc32(body))
        return body.ljust(HEADER_SIZE, b"\0")

    @classmethod
    def open(cls, path: Path) -> "HistoryFile":
        """Open an existing file; :class:`DamagedFile` says why it cannot be trusted."""
        fd = os.open(path, os.O_RDWR)
        try:
            return cls._check(path, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _check(cls, path: Path, fd: int) -> "HistoryFile":
        header = os.pread(fd, HEADER_SIZE, 0)
        if len(header) < HEADER_SIZE:
            raise DamagedFile(f"{path.name}: {len(header)} bytes, shorter than a header")
        magic, version, count, created, unit = _HEAD.unpack_from(header)
        if magic != MAGIC:
            raise DamagedFile(f"{path.name}: not a RasPy history file")
        if version != VERSION or not 1 <= count <= MAX_ARCHIVES:
            raise DamagedFile(f"{path.name}: version {version} with {count} archives is not readable")
        end = _HEAD.size + count * _ARCHIVE.size
        (crc,) = _CRC.unpack_from(header, end)
        if zlib.crc32(header[:end]) != crc:
            raise DamagedFile(f"{path.name}: header checksum mismatch")
        layout = tuple(Archive(step, rows) for step, rows, _ in
                       (_ARCHIVE.unpack_from(header, _HEAD.size + i * _ARCHIVE.size) for i in range(count)))
        opened = cls(path, fd, layout, created, unit.rstrip(b"\0").decode("utf-8", "replace"))
        actual = os.fstat(fd).st_size
        if actual != opened.size:
            raise DamagedFile(f"{path.name}: {actual} bytes where its header says {opened.size}")
        return opened

    def close(self) -> None:
        os.close(self.fd)

    def set_unit(self, unit: str | None) -> None:
        """Record a new unit (the header is rewritten: rare, a unit seldom changes)."""
        data = unit_bytes(unit)
        os.pwrite(self.fd, self._header(self.layout, self.created, data), 0)
        self.unit = data.decode()

    # -- raw readings ----------------------------------------------------

    def read_raw(self) -> list[tuple[int, float, float]]:
        """Every stored raw reading as ``(index, t, value)``, in row order."""
        archive, offset = self.layout[0], self.offsets[0]
        data = os.pread(self.fd, archive.rows * RAW.size, offset)
        return [(index, t, value) for index, (t, value) in enumerate(RAW.iter_unpack(data))
                if t > 0 and math.isfinite(t) and math.isfinite(value)]

    def write_raw(self, index: int, readings: Iterable[tuple[float, float]]) -> int:
        """Write readings into consecutive raw rows from ``index`` (no wrap); the bytes written."""
        data = b"".join(RAW.pack(t, value) for t, value in readings)
        return os.pwrite(self.fd, data, self.offsets[0] + index * RAW.size)

    # -- consolidated rows ---------------------------------------------------

    def read_row(self, archive: int, slot: int) -> Row | None:
        rows = self.read_rows(archive, slot, slot)
        return rows[0] if rows else None

    def read_rows(self, archive: int, first: int, last: int) -> list[Row]:
        """The stored rows of slots ``first`` to ``last`` (at most the archive's rows), oldest first."""
        rows = self.layout[archive].rows
        first = max(first, last - rows + 1)
        out: list[Row] = []
        slot = first
        while slot <= last:
            index = slot % rows
            run = min(last - slot + 1, rows - index)  # up to the end of the ring, then wrap
            data = os.pread(self.fd, run * ROW.size, self.offsets[archive] + index * ROW.size)
            for expected, fields in enumerate(ROW.iter_unpack(data), slot):
                row = Row(*fields)
                if row.slot == expected and row.count > 0 and all(map(math.isfinite, (row.total, row.low, row.high))):
                    out.append(row)
            slot += run
        return out

    def write_row(self, archive: int, row: Row) -> int:
        index = row.slot % self.layout[archive].rows
        return os.pwrite(self.fd, row.pack(), self.offsets[archive] + index * ROW.size)
