"""The key/value map in a file: one msgpack document, replaced atomically.

The server keeps two such files: the state file on the SD card and a copy in RAM-backed storage
(:class:`~raspy.state.kv.server.KvServer`). Each document says how new it is (the last sequence
number it holds), so the server can start from the newer of the two.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack

from raspy.atomic import atomic_write
from raspy.errors import RaspyError
from raspy.state.kv.message import EPOCH_SHIFT, epoch_of


class Unreadable(RaspyError):
    """A state file that cannot be read; the message says why, and where it was moved if it was."""


class StateFile:
    """The map as one msgpack document, replaced atomically.

    ``{"format": 1, "epoch", "sequence", "written", "entries"}``: ``sequence`` is the last one the
    server had numbered when it wrote the document (files written before it was kept hold only
    ``epoch``), ``written`` the wall time of the write. A crash leaves either the old file or the
    new one, never half of one (:func:`atomic_write`).
    """

    FORMAT = 1

    def __init__(self, path: str | Path, mode: int = 0o666) -> None:
        self.path, self.mode = Path(path), mode

    def load(self) -> dict | None:
        """The document as saved, or ``None`` when there is no file.

        A file that is not such a document is moved aside (``.corrupt``) and :class:`Unreadable`
        raised; one the system cannot read (no permission, an I/O error) raises it too, left in
        place. The caller decides what to start from.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Unreadable(f"{self.path} cannot be read ({exc.strerror or exc})") from None
        try:
            return self._check(msgpack.unpackb(data, raw=False))
        except Exception as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            raise Unreadable(f"{self.path} is unreadable ({exc or type(exc).__name__}); moved to {aside}") from None

    @classmethod
    def _check(cls, state: dict) -> dict:
        if state["format"] != cls.FORMAT or not isinstance(state["epoch"], int):
            raise ValueError("unknown format")
        state.setdefault("sequence", state["epoch"] << EPOCH_SHIFT)
        state.setdefault("written", None)
        if not isinstance(state["sequence"], int) or epoch_of(state["sequence"]) != state["epoch"]:
            raise ValueError("bad sequence")
        if not (state["written"] is None or isinstance(state["written"], float)):
            raise ValueError("bad time written")
        for key, sequence, properties, body, expires in state["entries"]:
            if not (isinstance(key, bytes) and isinstance(sequence, int) and isinstance(properties, bytes)
                    and isinstance(body, bytes) and (expires is None or isinstance(expires, float))):
                raise ValueError("bad entry")
        return state

    def save(self, data: bytes) -> None:
        atomic_write(self.path, data, self.mode)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def dump(cls, sequence: int, entries: list) -> bytes:
        """The document of a map whose last sequence number is ``sequence``, written now."""
        return msgpack.packb({"format": cls.FORMAT, "epoch": epoch_of(sequence), "sequence": sequence,
                              "written": time.time(), "entries": entries}, use_bin_type=True)
