"""Executives: one process per service, hosting that service's MDP workers.

An executive is what the supervisor forks and watches. Its main thread beats
on its board slot (so a hung executive is seen) and runs the subclass's
periodic work; each MDP worker runs in its own thread, so a slow handler
delays neither the beat nor the other workers.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from raspy import protocol as p
from raspy.protocol import Frames
from raspy.service import Service, ServiceError
from raspy.worker import Handler, MajorDomoWorker

log = logging.getLogger(__name__)

#: Executive kinds: the configuration's ``kind`` -> ``module:Class``, imported on use.
KINDS: dict[str, str] = {
    "broker": "raspy.broker:BrokerExecutive",
    "titanic": "raspy.titanic:Titanic",
    "core": "raspy.servers.core:Core",
}


def load_kind(kind: str) -> type["Executive"]:
    """The Executive class of a kind named in the configuration."""
    try:
        target = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown executive kind {kind!r}; known: {sorted(KINDS)}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Counters(Protocol):
    """What an executive writes on its board slot (see raspy.board)."""

    def beat(self, now: float) -> None: ...

    def count(self, requests: int = 0, replies: int = 0, errors: int = 0, bytes_in: int = 0, bytes_out: int = 0) -> None: ...


@dataclass
class Settings:
    """What an executive gets from the configuration."""

    name: str
    hostname: str
    broker: str = "tcp://127.0.0.1:5514"
    state_dir: Path = Path(".")
    kind: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    heartbeat: float = 2.5
    liveness: int = 3

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name


class Executive:
    """A process hosting MDP workers for the service ``<hostname>.<name>``."""

    #: seconds between beats on the board (and calls of :meth:`tick`)
    beat_interval = 0.5

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        self.settings = settings
        self.slot = slot
        self.service = p.routing_key(settings.hostname, settings.name)
        self.workers: list[MajorDomoWorker] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def get_instance_id(self) -> str:
        return f"{self.service}@{os.getpid()}"

    def add_worker(self, name: str, handler: Handler) -> MajorDomoWorker:
        """Serve ``name`` (a full service name) with ``handler``, counting on the board."""
        worker = MajorDomoWorker(self.settings.broker, name, self._counted(handler),
                                 heartbeat=self.settings.heartbeat, liveness=self.settings.liveness)
        self.workers.append(worker)
        return worker

    def add_service(self, suffix: str, handler: Handler) -> MajorDomoWorker:
        """Serve ``<hostname>.<name>.<suffix>``."""
        return self.add_worker(f"{self.service}.{suffix}", handler)

    def _counted(self, handler: Handler) -> Handler:
        slot = self.slot
        if slot is None:
            return handler

        def counted(frames: Frames) -> Frames:
            reply = handler(frames)
            failed = bool(reply) and reply[0][:1] in (b"4", b"5")
            slot.count(requests=1, replies=1, errors=int(failed),
                       bytes_in=sum(map(len, frames)), bytes_out=sum(map(len, reply)))
            return reply

        return counted

    def tick(self, now: float) -> None:
        """Periodic work of the executive, called every :attr:`beat_interval`."""

    def run(self) -> None:
        """Start the workers and beat until :meth:`shutdown`."""
        for worker in self.workers:
            thread = threading.Thread(target=worker.run, name=f"worker-{worker.service.decode()}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("%s running with %d workers", self.get_instance_id(), len(self.workers))
        try:
            while True:
                now = time.time()
                if self.slot is not None:
                    self.slot.beat(now)
                self.tick(now)
                if self._stop.wait(self.beat_interval):
                    break
        finally:
            self.close()

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the workers; subclasses release their own resources too."""
        for worker in self.workers:
            worker.shutdown()
        for thread in self._threads:
            thread.join(timeout=2)


class Status(Service):
    """``<host>.<service>.mmi``: ``status`` is 200 when every worker is connected, else 500."""

    def __init__(self, executive: Executive) -> None:
        self.executive = executive

    def do_status(self, args: Any) -> dict:
        missing = [w.service.decode() for w in self.executive.workers if not w.connected.is_set()]
        if missing:
            raise ServiceError(p.ERROR, f"not connected to the broker: {', '.join(missing)}")
        return {"instance": self.executive.get_instance_id(), "workers": len(self.executive.workers)}


class Server(Executive):
    """An executive that also answers ``<host>.<service>.mmi`` (status)."""

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.add_service("mmi", Status(self))
