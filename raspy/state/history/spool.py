"""The readings not yet on a history file, appended as they come to a spool in RAM-backed storage.

The history files reach the SD card only every flush interval. In between, each reading taken is
also appended here, on tmpfs (``/dev/shm``): writes there cost the card nothing (the kernel does
not count them in a process's ``write_bytes``), and the file outlives a ``kill -9`` of the process
(not a power cut, which takes RAM). A history that starts again replays its spool, writes its
files, then empties the spool.

Layout (little-endian)::

    header   MAGIC, VERSION: HEADER.size bytes
    records  MARK, body length (u16), CRC-32 of the body (u32), then the body:
             t (f64), value (f64), name length (u8), unit length (u8, NO_UNIT: none), name, unit

Reading it back trusts nothing: a record cut short at the end (the last write of a process that
died) is *torn* and ignored; bytes that do not make a record (a bad mark, length or checksum) are
*damaged*: skipped up to the next mark that starts a good record. A wrong header makes the whole
spool damaged. Whether a record's name, time and value belong in a history is the store's call.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"RASPYSPL"
VERSION = 1
HEADER = struct.Struct("<8sH6x")
MARK = b"\xa5\x5a"
_HEAD = struct.Struct("<2sHI")
_BODY = struct.Struct("<ddBB")
NO_UNIT = 255
#: A name or a unit of more bytes has no place in a history (the store cuts a unit to 32 bytes).
MAX_TEXT = NO_UNIT - 1
#: The default bound of a spool: about 90,000 readings of a device named like ``pi.fake.aquarium``.
SPOOL_BYTES = 4 * 1024 * 1024

Reading = tuple[str, float, float, str | None]


@dataclass
class Found:
    """What a spool held when it was opened."""

    readings: list[Reading] = field(default_factory=list)
    torn: int = 0                                        # records cut short at the end: 0 or 1
    damaged: list[str] = field(default_factory=list)     # where bytes were skipped, and why


def record(name: str, t: float, value: float, unit: str | None) -> bytes:
    """One reading as a spool record."""
    name_bytes = name.encode("utf-8")
    unit_bytes = b"" if unit is None else unit.encode("utf-8")
    if len(name_bytes) > MAX_TEXT or len(unit_bytes) > MAX_TEXT:
        raise ValueError(f"a spooled name or unit has at most {MAX_TEXT} bytes")
    body = _BODY.pack(t, value, len(name_bytes), NO_UNIT if unit is None else len(unit_bytes)) + name_bytes + unit_bytes
    return _HEAD.pack(MARK, len(body), zlib.crc32(body)) + body


def _body(data: bytes, pos: int) -> tuple[Reading | None, int]:
    """The reading of the record at ``pos`` and where the next begins; ``(None, 0)``: not a record here,
    ``(None, -1)``: the start of a record cut short by the end of the data."""
    head = data[pos:pos + _HEAD.size]
    if not MARK.startswith(head[:len(MARK)]):
        return None, 0
    if len(head) < _HEAD.size:
        return None, -1
    _, length, crc = _HEAD.unpack(head)
    if not _BODY.size <= length <= _BODY.size + 2 * MAX_TEXT:
        return None, 0
    end = pos + _HEAD.size + length
    if end > len(data):
        return None, -1
    body = data[pos + _HEAD.size:end]
    t, value, name_size, unit_size = _BODY.unpack_from(body)
    texts = body[_BODY.size:]
    if zlib.crc32(body) != crc or name_size + (0 if unit_size == NO_UNIT else unit_size) != len(texts):
        return None, 0
    try:
        name = texts[:name_size].decode("utf-8")
        unit = None if unit_size == NO_UNIT else texts[name_size:].decode("utf-8")
    except UnicodeDecodeError:
        return None, 0
    return (name, t, value, unit), end


def parse(data: bytes) -> Found:
    """Every good record of a spool's bytes, and what was torn or damaged."""
    found = Found()
    if len(data) < HEADER.size:
        found.torn = int(bool(data))  # a header cut short: nothing was spooled after it
        return found
    magic, version = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        found.damaged.append(f"not a version {VERSION} spool ({len(data)} bytes)")
        return found
    pos = HEADER.size
    while pos < len(data):
        reading, end = _body(data, pos)
        if reading is not None:
            found.readings.append(reading)
            pos = end
        elif end < 0:
            found.torn = 1
            break
        else:
            good = _next_record(data, pos + 1)
            found.damaged.append(f"{good - pos} bytes at offset {pos}")
            pos = good
    return found


def _next_record(data: bytes, pos: int) -> int:
    """Where the next good record (or a torn one at the end) starts after ``pos``; the end if none."""
    while (pos := data.find(MARK, pos)) >= 0:
        reading, end = _body(data, pos)
        if reading is not None or end < 0:
            return pos
        pos += 1
    return len(data)


class Spool:
    """An open spool file: append readings, empty it once they are on the history files."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd
        self.size = os.fstat(fd).st_size

    @classmethod
    def open(cls, path: str | Path) -> tuple["Spool", Found]:
        """Open (or create) the spool at ``path``, and what it held; a damaged header starts it afresh."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with open(fd, "rb", closefd=False) as file:
            found = parse(file.read())
        spool = cls(path, fd)
        if found.damaged and not found.readings or spool.size < HEADER.size:
            spool.clear()  # nothing there to keep: a header of ours, so that appends can start
        return spool, found

    def append(self, name: str, t: float, value: float, unit: str | None) -> None:
        self.size += os.write(self._fd, record(name, t, value, unit))

    def clear(self) -> None:
        """Keep nothing but the header: the readings are on the history files."""
        os.ftruncate(self._fd, 0)
        self.size = os.write(self._fd, HEADER.pack(MAGIC, VERSION))

    def remove(self) -> None:
        """Close and delete the spool (a clean stop: everything is on file)."""
        os.close(self._fd)
        self.path.unlink(missing_ok=True)
