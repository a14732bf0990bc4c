"""Majordomo (7/MDP) workers that keep heartbeating while their handler runs.

The serving thread owns the broker socket while it waits for a request. While
the handler runs, the process's heartbeat thread takes the socket (the lock
between them is the memory barrier ZeroMQ asks for when a socket changes
threads) and sends HEARTBEAT on time. So a handler that takes several heartbeat
periods (a 1-Wire conversion, a camera shot, an fsync on a tired SD card) keeps
its worker alive, and the broker neither purges it nor hands its request to
another worker, while a fast handler pays no thread hand-off at all.

Idle, a worker costs one wake-up per heartbeat: it sleeps on its sockets and a
pipe that :meth:`shutdown` writes to, answers the broker's HEARTBEAT with its
own when half its interval has passed, and wakes on its own timer only when the
broker is late.

:class:`MajorDomoWorker` serves one request at a time on one connection.
:class:`MajorDomoWorkerPool` keeps several connections for one service in one
thread and hands its handler every request that arrived together.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import zmq

from raspy.droplog import DropLog
from raspy.mdp import protocol as p
from raspy.wakeup import Wakeup

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
        self.send(p.worker_message(p.READY, self.service))
        self.client = None
        self.heard = time.monotonic()
        self.next_beat = self.heard + self.heartbeat

    def close(self, goodbye: bool = False) -> None:
        if self.sock is not None and not self.sock.closed:
            if goodbye:
                self.send(p.worker_message(p.DISCONNECT))
            self.sock.close()

    def send(self, frames: p.Frames) -> None:
        """Send without blocking: a socket whose connection is gone (a handshake the broker refused is
        not retried by ZeroMQ) would block forever; the silence that follows renews the connection."""
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass

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
            self.send(p.worker_message(p.REPLY, self.client, b"", *(reply or [b""])))
            self.client = None

    def beat_if_due(self, now: float, early: float = 0.0) -> None:
        """HEARTBEAT if one is due within ``early`` seconds (so one wake-up serves both directions)."""
        if now >= self.next_beat - early and not self.sock.closed:
            self.next_beat = now + self.heartbeat
            self.send(p.worker_message(p.HEARTBEAT))

    def deadline(self) -> float:
        """When this link must look again: its beat is overdue, or the broker has been silent too long."""
        return min(self.next_beat + self.heartbeat * LATE, self.heard + self.heartbeat * self.liveness)

    def silent(self, now: float) -> bool:
        return now - self.heard > self.heartbeat * self.liveness


#: A link's own timer fires this fraction of a heartbeat after its beat was due: by then the
#: broker's HEARTBEAT has usually woken it and been answered (the broker allows ``liveness`` periods).
LATE = 0.25


class _BusyBeats:
    """The one thread per process that heartbeats the workers whose handler is running.

    It sleeps until a handler starts, then wakes when the earliest of the busy
    workers' beats is due; an idle process has it blocked on its condition.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._cond = threading.Condition()
        self._busy: set[_Serving] = set()

    def enter(self, serving: "_Serving") -> None:
        if self._pid != os.getpid():
            with _STARTING:
                if self._pid != os.getpid():  # first use, or inherited by a fork without its thread
                    self._pid, self._cond, self._busy = os.getpid(), threading.Condition(), set()
                    threading.Thread(target=self._run, args=(self._cond, self._busy), name="mdp-beats",
                                     daemon=True).start()
        with self._cond:
            if not self._busy:  # asleep until someone is busy; else it wakes for the earliest beat anyway
                self._cond.notify()
            self._busy.add(serving)

    def leave(self, serving: "_Serving") -> None:
        if self._pid == os.getpid():
            with self._cond:
                self._busy.discard(serving)

    @staticmethod
    def _run(cond: threading.Condition, busy: set["_Serving"]) -> None:
        while True:
            with cond:
                while not busy:
                    cond.wait()
                servings = list(busy)
                wait = min(link.next_beat for serving in servings for link in serving._links) - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
            missed = 0.0
            for serving in servings:
                if serving._lock.acquire(blocking=False):
                    try:
                        serving._beat(time.monotonic())
                    finally:
                        serving._lock.release()
                else:  # its serving thread has the socket (and beats) or is about to take it back
                    missed = serving.heartbeat * 0.1
            if missed:
                with cond:
                    cond.wait(missed)


_STARTING = threading.Lock()
_busy_beats = _BusyBeats()


class _Serving:
    """What both workers share: the stop flag and its pipe, the socket lock, heartbeats and reconnection."""

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
        self._poller = zmq.Poller()
        self._wakeup = Wakeup()

    def shutdown(self) -> None:
        """Ask the worker to stop (at once: its wait ends); safe from signal handlers."""
        self._stop.set()
        self._wakeup.set()

    def _open(self) -> None:
        for link in self._links:
            link.open()
        self._watch()

    def _watch(self) -> None:
        self._poller = zmq.Poller()
        self._poller.register(self._wakeup, zmq.POLLIN)
        for link in self._links:
            self._poller.register(link.sock, zmq.POLLIN)

    def _close(self) -> None:
        for link in self._links:
            link.close(goodbye=True)

    def _heard(self) -> None:
        self._backoff = self.reconnect_min
        self.connected.set()

    def _poll(self) -> set:
        """The sockets with a message, after waiting until one comes, a link's deadline or :meth:`shutdown`."""
        timeout = max(0.0, min(link.deadline() for link in self._links) - time.monotonic())
        return {sock for sock, _ in self._poller.poll(timeout * 1000)}

    def _heard_on(self, link: _Link, frames: p.Frames) -> p.Frames | None:
        """A message from the broker on ``link``: answer its heartbeat with ours if half-due; the request, if one."""
        request = link.take(frames, self._drop)
        self._heard()
        link.beat_if_due(link.heard, early=self.heartbeat / 2)
        return request

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
        self._watch()
        return True


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
            _busy_beats.leave(self)
            if self._link.sock is None:
                self._open()
            if reply is not None:
                self._link.reply(reply)
            self._link.client = None
            while not self._stop.is_set():
                request = self._wait()
                if request is not None:
                    _busy_beats.enter(self)  # until the next recv, the process's beat thread beats for us
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

    def _wait(self) -> p.Frames | None:
        """Wait for a request, a deadline or :meth:`shutdown`; heartbeat, and reconnect when the broker is silent."""
        link = self._link
        if link.sock in self._poll():
            request = self._heard_on(link, link.sock.recv_multipart())
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

    def run(self) -> None:
        """Serve batches until :meth:`shutdown`."""
        with self._lock:
            self._open()
        try:
            while not self._stop.is_set():
                with self._lock:
                    batch = self._wait()
                if batch:
                    _busy_beats.enter(self)  # the process's beat thread beats for us meanwhile
                    try:
                        replies = self._handle([request for _, request in batch])
                    finally:
                        _busy_beats.leave(self)
                    with self._lock:
                        for (link, _), reply in zip(batch, replies):
                            link.reply(reply)
        finally:
            with self._lock:
                self._close()

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
        ready = self._poll()
        batch = []
        for link in self._links:
            if link.sock in ready:  # one message each: zmq_poll is level-triggered, the rest waits its turn
                request = self._heard_on(link, link.sock.recv_multipart())
                if request is not None:
                    batch.append((link, request))
        self._keep_alive()
        return batch
