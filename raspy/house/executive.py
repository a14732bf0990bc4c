"""Executives: one process per service, hosting that service's MDP workers.

An executive is what the supervisor forks and watches. Its main thread beats
on its board slot (so a hung executive is seen: every ``hang_timeout / 6``, 2.5 s
by default, one cheap wake-up) and runs the subclass's periodic work; each MDP worker runs in its own thread, so a slow handler
delays neither the beat nor the other workers.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import zmq

from raspy.curve import Curve
from raspy.house.board import Board, ram_file
from raspy.house.options import Option, check_table, with_defaults
from raspy.house.statistics import Statistics, StatisticsService
from raspy.mdp import protocol as p
from raspy.mdp.protocol import Frames
from raspy.mdp.service import Service, ServiceError, bad_request
from raspy.mdp.worker import BatchHandler, Handler, MajorDomoWorker, MajorDomoWorkerPool

log = logging.getLogger(__name__)

#: Executive kinds: the configuration's ``kind`` -> ``module:Class``, imported on use.
KINDS: dict[str, str] = {
    "broker": "raspy.executives.broker:BrokerExecutive",
    "echo": "raspy.executives.echo:EchoServer",
    "fake": "raspy.executives.fake:Fake",
    "gpio": "raspy.executives.gpio:Gpio",
    "history": "raspy.executives.history:History",
    "kv": "raspy.executives.kv:KvExecutive",
    "onewire": "raspy.executives.onewire:OneWire",
    "web": "raspy.executives.web:Web",
    "titanic": "raspy.executives.titanic:Titanic",
    "core": "raspy.executives.core:Core",
    "mqtt": "raspy.executives.mqtt:Mqtt",
    "configurator": "raspy.executives.config:Configurator",
    "hubconfig": "raspy.executives.config:HubConfig",
}


def load_kind(kind: str) -> type["Executive"]:
    """The Executive class of a kind: a name in :data:`KINDS`, or ``module:Class`` itself."""
    target = kind if ":" in kind else KINDS.get(kind)
    if target is None:
        raise ValueError(f"unknown executive kind {kind!r}; known: {sorted(KINDS)}, or 'module:Class'")
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {target!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed: a syntax error, a missing device...
        raise ValueError(f"cannot load {target!r}: {type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Executive)):
        raise ValueError(f"{target!r} is not an Executive class")
    return cls


class Counters(Protocol):
    """What an executive writes on its board slot (see raspy.house.board)."""

    def beat(self) -> None: ...

    def count(self, requests: int = 0, replies: int = 0, errors: int = 0, bytes_in: int = 0, bytes_out: int = 0) -> None: ...


@dataclass
class Settings:
    """What an executive gets from the configuration."""

    name: str
    hostname: str
    broker: str = "tcp://127.0.0.1:5514"
    kv_snapshot: str = "tcp://127.0.0.1:5515"
    kv_publisher: str = "tcp://127.0.0.1:5516"
    kv_collector: str = "tcp://127.0.0.1:5517"
    state_dir: Path = Path(".")
    kind: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    heartbeat: float = 2.5
    liveness: int = 3
    #: seconds between beats on the board (the supervisor's ``hang_timeout`` / ``BEATS_PER_HANG``)
    beat_interval: float = 2.5
    #: this host's CURVE keys and the hub's public key; None: a plaintext house
    curve: Curve | None = None

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    def ram_file(self, suffix: str) -> Path:
        """This executive's file ``<name>.<suffix>`` in RAM-backed storage: it outlives a crash, not a reboot."""
        return ram_file(self.state_dir, f"{self.name}.{suffix}")


#: Beats on the board within the supervisor's ``hang_timeout``: a slow core may miss all but one.
BEATS_PER_HANG = 6


class Executive:
    """A process hosting MDP workers for the service ``<hostname>.<name>``."""

    #: The options of this kind's ``[executives.NAME]`` table (see ``raspy.house.options``),
    #: checked when the configuration is loaded; None declares nothing and accepts any key.
    options: ClassVar[tuple[Option, ...] | None] = None
    #: whether :meth:`endpoints` are ZeroMQ sockets that CURVE secures (a plaintext one on an
    #: address other than loopback stops start-up unless ``[raspy] insecure = true``)
    secured: ClassVar[bool] = False

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        if settings.curve is not None:  # every socket of this process from now on: workers, clients, kv
            settings.curve.client(zmq.Context.instance())
        # each option against its declaration once more: a test or a program may build an
        # executive from Settings of its own, without a configuration file
        check_table(self.options, settings.options)
        self.settings = settings
        # run alone (no supervisor), an executive counts on a private slot: one code path
        self.slot = slot if slot is not None else Board.private(1, [settings.name]).slot(0)
        self.service = p.routing_key(settings.hostname, settings.name)
        self.workers: list[MajorDomoWorker | MajorDomoWorkerPool] = []
        self._threads: list[threading.Thread] = []
        self._stoppers: list[Callable[[], None]] = []
        self._started = False
        self._stop = threading.Event()
        #: why a serving thread ended before the executive was asked to stop: :meth:`run` exits with it
        self.failure = ""
        #: the supervisor's pid when forked by one: the executive stops if it is orphaned
        self.parent_pid: int | None = None

    @classmethod
    def check_options(cls, settings: Settings) -> None:
        """Checks beyond each option's own: between options, or against the house's settings.

        Called when the configuration is loaded, after every option passed its own check; raise
        ``ValueError`` with the reason (an :class:`~raspy.errors.InvalidValue` names the key).
        """

    def option(self, name: str) -> Any:
        """Option ``name`` as configured, else its declared default."""
        values = with_defaults(self.options, self.settings.options)
        if self.options is not None and name not in values:
            raise KeyError(f"{type(self).__name__} reads option {name!r} but does not declare it")
        return values.get(name)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        """The endpoints this executive binds: a house does not start while one of them is taken."""
        return []

    def get_instance_id(self) -> str:
        return f"{self.service}@{os.getpid()}"

    def add_worker(self, name: str, handler: Handler) -> MajorDomoWorker:
        """Serve ``name`` (a full service name) with ``handler``, counting on the board."""
        worker = MajorDomoWorker(self.settings.broker, name, self._counted(handler),
                                 heartbeat=self.settings.heartbeat, liveness=self.settings.liveness)
        self.workers.append(worker)
        self.add_thread(worker.run, worker.shutdown, f"worker-{name}")
        return worker

    def add_pool(self, name: str, handler: BatchHandler, size: int) -> MajorDomoWorkerPool:
        """Serve ``name`` on ``size`` connections from one thread, ``handler`` taking requests in batches."""
        pool = MajorDomoWorkerPool(self.settings.broker, name, self._counted_batch(handler), size=size,
                                   heartbeat=self.settings.heartbeat, liveness=self.settings.liveness)
        self.workers.append(pool)
        self.add_thread(pool.run, pool.shutdown, f"pool-{name}")
        return pool

    def add_thread(self, target: Callable[[], None], stop: Callable[[], None] | None = None, name: str = "") -> None:
        """Run ``target`` in a thread of its own from :meth:`run` on; ``stop`` ends it at :meth:`close`.

        Without ``stop``, ``target`` should return once :meth:`stopping` waits no more. A thread
        that ends before the executive is asked to stop (an exception, such as a port already in
        use) ends the executive, so its supervisor sees it and restarts it.
        """
        name = name or target.__name__
        self._threads.append(threading.Thread(target=self._serving(target, name), name=name, daemon=True))
        if stop is not None:
            self._stoppers.append(stop)

    def _serving(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def serve() -> None:
            try:
                target()
            except BaseException as exc:
                self._thread_ended(name, f"died: {exc}")
                raise  # the thread's traceback goes to the log
            self._thread_ended(name, "returned")

        return serve

    def _thread_ended(self, name: str, how: str) -> None:
        if not self._stop.is_set():
            self.failure = f"thread {name} {how}"
            self._stop.set()

    def stopping(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: until then); true once the executive is asked to stop."""
        return self._stop.wait(timeout)

    def add_service(self, suffix: str, handler: Handler) -> MajorDomoWorker:
        """Serve ``<hostname>.<name>.<suffix>``."""
        return self.add_worker(f"{self.service}.{suffix}", handler)

    def _counted(self, handler: Handler) -> Handler:
        def counted(frames: Frames) -> Frames:
            reply = handler(frames)
            self._count([frames], [reply])
            return reply

        return counted

    def _counted_batch(self, handler: BatchHandler) -> BatchHandler:
        def counted(requests: list[Frames]) -> list[Frames]:
            replies = handler(requests)
            self._count(requests, replies)
            return replies

        return counted

    def _count(self, requests: list[Frames], replies: list[Frames]) -> None:
        failed = sum(bool(reply) and reply[0][:1] == b"5" for reply in replies)  # a 4xx is the caller's mistake
        self.slot.count(requests=len(requests), replies=len(replies), errors=failed,
                        bytes_in=sum(map(len, chain.from_iterable(requests))),
                        bytes_out=sum(map(len, chain.from_iterable(replies))))

    def tick(self, now: float) -> None:
        """Periodic work of the executive, called with each beat (``Settings.beat_interval``)."""

    def run(self) -> None:
        """Start the workers and other threads, and beat until :meth:`shutdown`."""
        self._started = True
        for thread in self._threads:
            thread.start()
        log.info("%s running with %d workers", self.get_instance_id(), len(self.workers))
        try:
            while not self._orphaned():
                now = time.time()
                self.slot.beat()
                self.tick(now)
                if self._stop.wait(self.settings.beat_interval):
                    break
        finally:
            self.close()
        if self.failure:
            raise SystemExit(f"{self.settings.name}: {self.failure}")

    def _orphaned(self) -> bool:
        """True once the supervisor is gone (the fallback of PR_SET_PDEATHSIG)."""
        if self.parent_pid is None or os.getppid() == self.parent_pid:
            return False
        log.error("%s: supervisor %d is gone, stopping", self.get_instance_id(), self.parent_pid)
        return True

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the workers and threads; subclasses release their own resources too."""
        self._stop.set()
        for stop in self._stoppers if self._started else ():
            stop()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=2)


class Status(Service):
    """``<host>.<service>.mmi``: ``status`` (200 when every worker is connected, else 500) and
    ``exists NAME`` (whether this executive serves ``NAME``, a full name or a suffix)."""

    def __init__(self, executive: Executive) -> None:
        self.executive = executive

    def do_status(self, args: Any) -> dict:
        missing = [w.service.decode() for w in self.executive.workers if not w.connected.is_set()]
        if missing:
            raise ServiceError(p.ERROR, f"not connected to the broker: {', '.join(missing)}")
        return {"instance": self.executive.get_instance_id(), "workers": len(self.executive.workers)}

    def do_exists(self, args: Any) -> bool:
        if not isinstance(args, str) or not args:
            raise bad_request("exists needs a service name (a string)")
        served = {w.service.decode() for w in self.executive.workers}
        return args in served or f"{self.executive.service}.{args}" in served


class Server(Executive):
    """An executive that also answers ``<host>.<service>.mmi`` and ``<host>.<service>.statistics``.

    The statistics' default counters are views of the board slot the handler
    wrapper counts on, so nothing is counted twice.
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.statistics = Statistics(self.service, self.slot)
        self.add_service("mmi", Status(self))
        self.add_service("statistics", StatisticsService(self.statistics))
