"""A Majordomo (7/MDP) worker that keeps heartbeating while its handler runs.

The caller's thread owns the broker socket while it waits for a request. While
the handler runs, a small heartbeat thread takes the socket (the lock between
them is the memory barrier ZeroMQ asks for when a socket changes threads) and
sends HEARTBEAT on time. So a handler that takes several heartbeat periods (a
1-Wire conversion, a camera shot) keeps its worker alive, and the broker
neither purges it nor hands its request to another worker, while a fast
handler pays no thread hand-off at all.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import zmq

from raspy import protocol as p
from raspy.droplog import DropLog

log = logging.getLogger(__name__)

Handler = Callable[[p.Frames], p.Frames]


class MajorDomoWorker:
    """Serves one service name through the broker at ``broker``.

    Two forms, as in the 2015 manual: ``recv(reply)`` sends the previous reply
    and returns the next request (``None`` once shut down), or ``run()`` which
    calls ``handler(request) -> reply`` until :meth:`shutdown`.
    """

    #: longest wait before the stop flag is looked at again (seconds)
    stop_check = 0.25

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
        self.broker = broker
        self.service = service.encode() if isinstance(service, str) else service
        self.handler = handler
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect_min, self.reconnect_max = reconnect
        self.context = context or zmq.Context.instance()
        self.connected = threading.Event()
        self.reconnects = 0
        self._stop = threading.Event()
        self._drop = DropLog(log)
        self._lock = threading.Lock()  # whoever holds it owns the socket
        self._sock: zmq.Socket | None = None
        self._client: bytes | None = None  # whose request the handler is serving
        self._heard = 0.0
        self._next_beat = 0.0
        self._backoff = self.reconnect_min
        self._beater = threading.Thread(target=self._beat_while_busy, daemon=True,
                                        name=f"mdp-beat-{self.service.decode(errors='replace')}")

    def recv(self, reply: p.Frames | None = None) -> p.Frames | None:
        """Send ``reply`` for the last request, then wait for the next one."""
        with self._lock:
            if self._sock is None:
                self._connect()
                self._beater.start()
            if reply is not None and self._client is not None:
                self._sock.send_multipart(p.worker_message(p.REPLY, self._client, b"", *reply))
            self._client = None
            while not self._stop.is_set():
                request = self._wait()
                if request is not None:
                    return request
            self._sock.send_multipart(p.worker_message(p.DISCONNECT))
            self._sock.close()
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
                log.exception("handler of %s failed", self.service)
                reply = p.reply(p.ERROR, f"{type(exc).__name__}: {exc}")
        self._beater.join()

    def shutdown(self) -> None:
        """Ask :meth:`recv` to return ``None`` (within :attr:`stop_check`); safe from signal handlers."""
        self._stop.set()

    # -- the socket, always with the lock held --------------------------------

    def _connect(self) -> None:
        self._sock = self.context.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(self.broker)
        self._sock.send_multipart(p.worker_message(p.READY, self.service))
        self._heard = time.monotonic()
        self._next_beat = self._heard + self.heartbeat

    def _beat_if_due(self, now: float) -> None:
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat
            self._sock.send_multipart(p.worker_message(p.HEARTBEAT))

    def _wait(self) -> p.Frames | None:
        """Wait a little for a request; heartbeat, and reconnect when the broker is silent."""
        timeout = max(0.0, min(self._next_beat - time.monotonic(), self.stop_check))
        if self._sock.poll(timeout * 1000):
            frames = self._sock.recv_multipart()
            self._heard, self._backoff = time.monotonic(), self.reconnect_min
            self.connected.set()
            try:
                command, rest = p.parse_worker(frames)
            except p.ProtocolError as exc:
                self._drop(str(exc), frames)
                return None
            if command == p.REQUEST:
                self._client = rest[0]
                return rest[2:]
            if command == p.DISCONNECT:
                log.info("%s: broker sent DISCONNECT, reconnecting", self.service)
                self._heard = 0.0
            elif command != p.HEARTBEAT:
                self._drop(f"{p.COMMANDS[command]} is not for workers", frames)
        now = time.monotonic()
        self._beat_if_due(now)
        if now - self._heard > self.heartbeat * self.liveness:
            self._reconnect()
        return None

    def _reconnect(self) -> None:
        self.connected.clear()
        log.warning("%s: broker silent, reconnecting in %.1fs", self.service, self._backoff)
        self._sock.close()
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.reconnect_max)
        self.reconnects += 1
        self._connect()

    def _beat_while_busy(self) -> None:
        """Heartbeat thread: beats only when the handler, not :meth:`recv`, has the time."""
        while not self._stop.wait(self.heartbeat / 2):
            with self._lock:
                if not self._sock.closed:
                    self._beat_if_due(time.monotonic())
