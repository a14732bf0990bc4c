"""Where Core keeps what must survive a restart: Titanic's ``titanic.store`` service.

Core's managers see a small :class:`Store` (section, key -> value), so they can
be tested with a dict; :class:`TitanicStore` is the real one, which asks
Titanic through the broker. Titanic writes and fsyncs before it answers, so a
change Core has acknowledged survives ``kill -9`` and a power cut.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

from raspy.errors import RaspyError
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.service import ServiceError
from raspy.state.titanic.client import STORE_SERVICE


class StoreError(RaspyError):
    """The store did not take or give a value (Titanic down or refusing)."""


class Store(Protocol):
    """What Core needs from a key/value store; every call raises :class:`StoreError` on failure."""

    def get(self, section: str, key: str) -> Any | None: ...

    def set(self, section: str, key: str, value: Any) -> None: ...

    def delete(self, section: str, key: str) -> None: ...

    def keys(self, section: str) -> list[str]: ...


class TitanicStore:
    """A :class:`Store` in Titanic's ``titanic.store``, under the owner service's name."""

    def __init__(self, client: Callable[[], MajorDomoClient], owner: str) -> None:
        self.client = client
        self.owner = owner

    def _call(self, command: str, args: dict[str, Any]) -> tuple[int, Any]:
        try:
            with self.client() as client:
                return client.call(STORE_SERVICE, command, {"service": self.owner, **args})
        except Exception as exc:  # a timeout or a malformed reply: the store is unusable now
            raise StoreError(f"{STORE_SERVICE} {command}: {exc}") from None

    def _ok(self, command: str, args: dict[str, Any]) -> Any:
        status, result = self._call(command, args)
        if status != p.OK:
            raise StoreError(f"{STORE_SERVICE} {command}: {status} {result}")
        return result

    def get(self, section: str, key: str) -> Any | None:
        status, result = self._call("get", {"section": section, "key": key})
        if status == p.NOT_FOUND:
            return None
        if status != p.OK:
            raise StoreError(f"{STORE_SERVICE} get: {status} {result}")
        return result

    def set(self, section: str, key: str, value: Any) -> None:
        self._ok("set", {"section": section, "key": key, "value": value})

    def delete(self, section: str, key: str) -> None:
        status, result = self._call("delete", {"section": section, "key": key})
        if status not in (p.OK, p.NOT_FOUND):
            raise StoreError(f"{STORE_SERVICE} delete: {status} {result}")

    def keys(self, section: str) -> list[str]:
        return list(self._ok("list", {"section": section}) or [])


@contextmanager
def stored() -> Iterator[None]:
    """For service commands: a store failure becomes ``500`` with the reason (nothing changed)."""
    try:
        yield
    except StoreError as exc:
        raise ServiceError(p.ERROR, f"not stored, nothing changed: {exc}") from None
