"""What a stranger can make Titanic keep: one bound each, and how a refusal is counted and logged.

Each field of :class:`TitanicLimits` is an option of the ``titanic`` executive;
docs/limits.md (``## Titanic``) says what happens beyond each.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from raspy.droplog import DropLog


def _bound(default: int, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TitanicLimits:
    """Titanic's bounds; every one is an integer >= 1."""

    max_pending: int = _bound(10_000, "requests not yet answered by their service, all services together")
    max_service_pending: int = _bound(1_000, "requests not yet answered by their service, one service")
    max_request: int = _bound(65_536, "bytes of one request's body (its frames together)")
    max_replies: int = _bound(10_000, "replies stored and not yet closed: beyond, new requests are refused")
    store_keys: int = _bound(10_000, "keys in the store")
    store_key: int = _bound(256, "bytes of one key's service, section and key names together")
    store_value: int = _bound(65_536, "bytes of one stored value (packed)")
    store_bytes: int = _bound(16 << 20, "bytes of the store: names and packed values")


class Refusals:
    """Requests refused beyond a bound: counted, and logged at most 10 lines per 10 s (:class:`DropLog`).

    ``client_errors`` counts the ``4xx`` ones apart: a ``5xx`` reply is already
    counted as an error on the board by the executive's handler wrapper.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.lines = DropLog(logger)
        self.total = 0
        self.client_errors = 0
        self._lock = threading.Lock()  # the request pool and the store's worker refuse from their own threads

    def __call__(self, status: int, reason: str) -> int:
        """Count and log one refusal; its ``status``."""
        with self._lock:
            self.total += 1
            self.client_errors += status < 500
        self.lines.log(logging.WARNING, "refused (%d): %s", status, reason)
        return status
