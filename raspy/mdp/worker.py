"""Majordomo (7/MDP) workers that keep heartbeating while their handler runs.

The serving thread owns the broker socket while it waits for a request. While
the handler runs, a small heartbeat thread takes the socket (the lock between
them is the memory barrier ZeroMQ asks for when a socket changes threads) and
sends HEARTBEAT on time. So a handler that takes several heartbeat periods (a
1-Wire conversion, a camera shot, an fsync on a tired SD card) keeps its worker
alive, and the broker neither purges it nor hands its request to another
worker, while a fast handler pays no thread hand-off at all.

:class:`MajorDomoWorker` serves one request at a time on one connection.
:class:`MajorDomoWorkerPool` keeps several connections for one service in one
thread and hands its handler every request that arrived together.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import zmq

from raspy.droplog import DropLog
from raspy.mdp import protocol as p

log = logging.getLogger(__name__)

Handler = Callable[[p.Frames], p.Frames]
BatchHandler = Callable[[list[p.Frames]], list[p.Frames]]


class _Link:
    """One worker connection to the broker: READY when opened, HEARTBEAT when due, silence noticed."""

    def __init__(self, context: zmq.Context, broker: str, service: bytes, heartbeat: float, liveness: int) -> None:
        self.context = context
        self.broker = broker
        self.service = service
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.sock: zmq.Socket | None = None
        self.client: bytes | None = None  # whose request is being served
        self.heard = 0.0
        self.next_beat = 0.0

    def open(self) -> None:
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(self.broker)
        self.sock.send_multipart(p.worker_message(p.READY, self.service))
        self.client = None
        self.heard = time.monotonic()
        self.next_beat = self.heard + self.heartbeat

    def close(self, goodbye: bool = False) -> None:
        if self.sock is not None and not self.sock.closed:
            if goodbye:
                self.sock.send_multipart(p.worker_message(p.DISCONNECT))
            self.sock.close()

    def take(self, frames: p.Frames, drop: DropLog) -> p.Frames | None:
        """A message from the broker: the request's body, or ``None`` (heartbeat, disconnect, dropped)."""
        self.heard = time.monotonic()
        try:
            command, rest = p.parse_worker(frames)
        except p.ProtocolError as exc:
            drop(str(exc), frames)
            return None
        if command == p.REQUEST:
            if self.client is not None:
                drop("REQUEST while another is being served", frames)
                return None
            self.client = rest[0]
            return rest[2:]
        if command == p.DISCONNECT:
            log.info("%s: broker sent DISCONNECT, reconnecting", self.service.decode(errors="replace"))
            self.heard = 0.0
        elif command != p.HEARTBEAT:
            drop(f"{p.COMMANDS[command]} is not for workers", frames)
        return None

    def reply(self, reply: p.Frames) -> None:
        """Answer the request being served (if the connection was not renewed since); 7/MDP: a body frame at least."""
        if self.client is not None:
            self.sock.send_multipart(p.worker_message(p.REPLY, self.client, b"", *(reply or [b""])))
            self.client = None

    def beat_if_due(self, now: float) -> None:
        if now >= self.next_beat and not self.sock.closed:
            self.next_beat = now + self.heartbeat
            self.sock.send_multipart(p.worker_message(p.HEARTBEAT))

    def silent(self, now: float) -> bool:
        return now - self.heard > self.heartbeat * self.liveness


class _Serving:
    """What both workers share: the stop flag, the socket lock, the heartbeat thread and reconnection."""

    #: longest wait before the stop flag is looked at again (seconds)
    stop_check = 0.25

    def __init__(self, broker: str, service: str | bytes, links: int, heartbeat: float, liveness: int,
                 reconnect: tuple[float, float], context: zmq.Context | None) -> None:
        self.broker = broker
        self.service = service.encode() if isinstance(service, str) else service
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect_min, self.reconnect_max = reconnect
        self.context = context or zmq.Context.instance()
        self.connected = threading.Event()
        self.reconnects = 0
        self._links = [_Link(self.context, broker, self.service, heartbeat, liveness) for _ in range(links)]
        self._stop = threading.Event()
        self._drop = DropLog(log)
        self._lock = threading.Lock()  # whoever holds it owns the sockets
        self._backoff = self.reconnect_min
        self.name = self.service.decode(errors="replace")  # as log lines print it
        self._beater = threading.Thread(target=self._beat_while_busy, daemon=True, name=f"mdp-beat-{self.name}")

    def shutdown(self) -> None:
        """Ask the worker to stop (within :attr:`stop_check`); safe from signal handlers."""
        self._stop.set()

    def _open(self) -> None:
        for link in self._links:
            link.open()
        self._beater.start()

    def _close(self) -> None:
        for link in self._links:
            link.close(goodbye=True)

    def _heard(self) -> None:
        self._backoff = self.reconnect_min
        self.connected.set()

    def _timeout(self) -> float:
        """Seconds to wait for a request: until the next heartbeat is due, at most :attr:`stop_check`."""
        return max(0.0, min(min(link.next_beat for link in self._links) - time.monotonic(), self.stop_check))

    def _beat(self, now: float) -> None:
        for link in self._links:
            link.beat_if_due(now)

    def _keep_alive(self) -> bool:
        """Beat where due and renew silent connections; true when connections were renewed."""
        now = time.monotonic()
        self._beat(now)
        silent = [link for link in self._links if link.silent(now)]
        if not silent:
            return False
        self.connected.clear()
        log.warning("%s: broker silent, reconnecting in %.1fs", self.name, self._backoff)
        for link in silent:
            link.close()
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.reconnect_max)
        self.reconnects += 1
        for link in silent:
            link.open()
        return True

    def _beat_while_busy(self) -> None:
        """Heartbeat thread: beats only when the handler, not the serving thread, has the time."""
        while not self._stop.wait(self.heartbeat / 2):
            with self._lock:
                self._beat(time.monotonic())


class MajorDomoWorker(_Serving):
    """Serves one service name through the broker at ``broker``.

    Two forms: ``recv(reply)`` sends the previous reply
    and returns the next request (``None`` once shut down), or ``run()`` which
    calls ``handler(request) -> reply`` until :meth:`shutdown`.
    """

    def __init__(
        self,
        broker: str,
        service: str | bytes,
        handler: Handler | None = None,
        heartbeat: float = 2.5,
        liveness: int = 3,
        reconnect: tuple[float, float] = (0.1, 5.0),
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(broker, service, 1, heartbeat, liveness, reconnect, context)
        self.handler = handler
        self._link = self._links[0]

    def recv(self, reply: p.Frames | None = None) -> p.Frames | None:
        """Send ``reply`` for the last request, then wait for the next one."""
        with self._lock:
            if self._link.sock is None:
                self._open()
            if reply is not None:
                self._link.reply(reply)
            self._link.client = None
            while not self._stop.is_set():
                request = self._wait()
                if request is not None:
                    return request
            self._close()
            return None

    def run(self) -> None:
        """Call the handler for each request until :meth:`shutdown`."""
        if self.handler is None:
            raise TypeError("run() needs a handler")
        reply: p.Frames | None = None
        while (request := self.recv(reply)) is not None:
            try:
                reply = self.handler(request)
            except Exception as exc:
                log.exception("handler of %s failed", self.name)
                reply = p.reply(p.ERROR, f"{type(exc).__name__}: {exc}")
        self._beater.join()

    def _wait(self) -> p.Frames | None:
        """Wait a little for a request; heartbeat, and reconnect when the broker is silent."""
        link = self._link
        if link.sock.poll(self._timeout() * 1000):
            request = link.take(link.sock.recv_multipart(), self._drop)
            self._heard()
            if request is not None:
                return request
        self._keep_alive()
        return None


class MajorDomoWorkerPool(_Serving):
    """``size`` connections for one service, served by one thread: ``handler`` gets the requests that arrived together.

    MDP gives a worker one request at a time, so a handler that gains from
    taking requests together (Titanic commits every request that arrived
    during the last fsync in one transaction) needs several connections. A
    thread per connection would take the GIL in turn for every frame; one
    thread polling them all does the same work without those hand-offs.
    ``handler(requests) -> replies`` answers each request, in order.
    """

    def __init__(
        self,
        broker: str,
        service: str | bytes,
        handler: BatchHandler,
        size: int = 8,
        heartbeat: float = 2.5,
        liveness: int = 3,
        reconnect: tuple[float, float] = (0.1, 5.0),
        context: zmq.Context | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        super().__init__(broker, service, size, heartbeat, liveness, reconnect, context)
        self.handler = handler
        self._poller = zmq.Poller()

    def run(self) -> None:
        """Serve batches until :meth:`shutdown`."""
        with self._lock:
            self._open()
            self._watch()
        try:
            while not self._stop.is_set():
                with self._lock:
                    batch = self._wait()
                if batch:
                    replies = self._handle([request for _, request in batch])  # the beat thread may beat meanwhile
                    with self._lock:
                        for (link, _), reply in zip(batch, replies):
                            link.reply(reply)
        finally:
            with self._lock:
                self._close()
            self._beater.join()

    def _watch(self) -> None:
        self._poller = zmq.Poller()
        for link in self._links:
            self._poller.register(link.sock, zmq.POLLIN)

    def _handle(self, requests: list[p.Frames]) -> list[p.Frames]:
        try:
            replies = self.handler(requests)
            if len(replies) != len(requests):
                raise ValueError(f"{len(replies)} replies to {len(requests)} requests")
            return replies
        except Exception as exc:
            log.exception("handler of %s failed", self.name)
            return [p.reply(p.ERROR, f"{type(exc).__name__}: {exc}")] * len(requests)

    def _wait(self) -> list[tuple[_Link, p.Frames]]:
        """The requests that arrived on any connection, after waiting a little; beats and reconnects too."""
        ready = dict(self._poller.poll(self._timeout() * 1000))
        batch = []
        for link in self._links:
            if link.sock in ready:  # one message each: zmq_poll is level-triggered, the rest waits its turn
                self._heard()
                request = link.take(link.sock.recv_multipart(), self._drop)
                if request is not None:
                    batch.append((link, request))
        if self._keep_alive():
            self._watch()
        return batch
