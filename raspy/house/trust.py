"""Who may do what in a CURVE house: every host its own names, the hub everything.

A connection's host is the name its key has on the hub's allow-list (``zmq.Frame.get("User-Id")``,
see :mod:`raspy.curve`). Host ``shed`` may serve only ``shed.*`` services and publish only its own
devices and events; the hub's own executives run under the hub's key and may do anything else
the broker and key/value server accept (``titanic.*``, any host's names).
"""
from __future__ import annotations

from raspy.state.keys import DEVICE, EVENT, HOST


class Trust:
    """The rules of one hub, named ``hub``."""

    def __init__(self, hub: str) -> None:
        self.hub = hub

    def may_serve(self, host: str, service: bytes) -> bool:
        """Whether ``host`` may register a worker for ``service`` (the broker asks on READY)."""
        return bool(host) and (host == self.hub or service.startswith(f"{host}.".encode()))

    def may_publish(self, host: str, key: bytes) -> bool:
        """Whether ``host`` may set ``key``: ``/device/<host>.*``, ``/event/<host>.*``, ``/host/<host>``."""
        if not host:
            return False
        if host == self.hub:
            return True
        return key.startswith((f"{DEVICE}{host}.".encode(), f"{EVENT}{host}.".encode())) or key == f"{HOST}{host}".encode()
