"""A dict standing in for Titanic's store in unit tests of Core's managers."""
from __future__ import annotations

import copy
from typing import Any

from raspy.automation.store import StoreError


class MemoryStore:
    """The :class:`raspy.automation.store.Store` calls on a dict; ``down = True`` makes every call fail."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("titanic.store: no reply")

    def get(self, section: str, key: str) -> Any | None:
        self._check()
        return copy.deepcopy(self.data.get((section, key)))

    def set(self, section: str, key: str, value: Any) -> None:
        self._check()
        self.data[(section, key)] = copy.deepcopy(value)

    def delete(self, section: str, key: str) -> None:
        self._check()
        self.data.pop((section, key), None)

    def keys(self, section: str) -> list[str]:
        self._check()
        return sorted(k for s, k in self.data if s == section)
