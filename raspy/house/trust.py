"""Who may do what in a CURVE house: every host its own names, the hub everything.

A connection's host is the name its key has on the hub's allow-list (``zmq.Frame.get("User-Id")``,
see :mod:`raspy.curve`). Host ``shed`` may serve only ``shed.*`` services and publish only its own
devices and events; the hub's own executives run under the hub's key and may do anything else
the broker and key/value server accept (``titanic.*``, any host's names).

One kind of service is private to a host: ``<hub>.config.<host>``, the hub's configuration for
that host (see :mod:`raspy.house.hubconfig`). Only the host it is for (and the hub) may call it:
the broker decides by the caller's ``User-Id``, so a worker behind it knows who asks by the name
it serves, and nothing a satellite writes in its request can change that.
"""
from __future__ import annotations

from raspy.state.keys import DEVICE, EVENT, HOST

#: ``<hub>.config.<host>``: the hub's configuration for one host, callable by that host only.
CONFIG = "config"
#: the first names of services that are the hub's whatever a host is called
HUB_SERVICES = frozenset({"mmi", "titanic"})


class Trust:
    """The rules of one hub, named ``hub``."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        #: the prefix of services private to one host each: ``<hub>.config.``
        self.private = f"{hub}.{CONFIG}.".encode()

    def reserved(self, name: str) -> bool:
        """Whether no satellite may be called ``name``: the hub's own name, or that of a hub service."""
        return name == self.hub or name in HUB_SERVICES

    def may_serve(self, host: str, service: bytes) -> bool:
        """Whether ``host`` may register a worker for ``service`` (the broker asks on READY)."""
        if host == self.hub:
            return True
        return bool(host) and host not in HUB_SERVICES and service.startswith(f"{host}.".encode())

    def may_publish(self, host: str, key: bytes) -> bool:
        """Whether ``host`` may set ``key``: ``/device/<host>.*``, ``/event/<host>.*``, ``/host/<host>``."""
        if not host:
            return False
        if host == self.hub:
            return True
        return key.startswith((f"{DEVICE}{host}.".encode(), f"{EVENT}{host}.".encode())) or key == f"{HOST}{host}".encode()

    def may_call(self, host: str, service: bytes) -> bool:
        """Whether ``host`` may send a request to ``service`` (the broker asks for names under :attr:`private`).

        ``<hub>.config.shed`` is for host ``shed`` (and the hub) alone; every other service is open
        to every allowed host.
        """
        if not service.startswith(self.private):
            return True
        return bool(host) and (host == self.hub or service == self.private + host.encode())
