"""The key/value map on disk: one msgpack document, replaced atomically."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import msgpack

from raspy.atomic import atomic_write

log = logging.getLogger(__name__)


class StateFile:
    """The map on disk as one msgpack document, replaced atomically.

    A crash leaves either the old file or the new one, never half of one (:func:`atomic_write`).
    """

    FORMAT = 1

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict | None:
        """``{"epoch", "entries"}`` as saved, or ``None`` when there is no usable file.

        A corrupt file is moved aside (``.corrupt``) and logged: the server
        starts empty rather than not at all.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = msgpack.unpackb(data, raw=False)
            if state["format"] != self.FORMAT or not isinstance(state["epoch"], int):
                raise ValueError("unknown format")
            for key, sequence, properties, body, expires in state["entries"]:
                if not (isinstance(key, bytes) and isinstance(sequence, int) and isinstance(properties, bytes)
                        and isinstance(body, bytes) and (expires is None or isinstance(expires, float))):
                    raise ValueError("bad entry")
            return state
        except Exception as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("state file %s is unreadable (%s); moved to %s, starting empty", self.path, exc, aside)
            os.replace(self.path, aside)
            return None

    def save(self, data: bytes) -> None:
        atomic_write(self.path, data)

    @classmethod
    def dump(cls, epoch: int, entries: list) -> bytes:
        return msgpack.packb({"format": cls.FORMAT, "epoch": epoch, "entries": entries}, use_bin_type=True)


# -- server -----------------------------------------------------------------
