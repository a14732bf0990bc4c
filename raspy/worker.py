"""A Majordomo (7/MDP) worker that keeps heartbeating while its handler runs.

The broker socket lives in a small I/O thread that heartbeats, reconnects and
queues requests; the caller's thread only runs the handler. So a handler that
takes several heartbeat periods (a 1-Wire conversion, a camera shot) keeps its
worker alive, and the broker neither purges it nor hands its request to
another worker.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable

import zmq

from raspy import protocol as p
from raspy.droplog import DropLog

log = logging.getLogger(__name__)

Handler = Callable[[p.Frames], p.Frames]

_STALE = b""  # client address of a request whose socket was replaced: its reply is dropped
_ids = itertools.count()


class MajorDomoWorker:
    """Serves one service name through the broker at ``broker``.

    Two forms, as in the 2015 manual: ``recv(reply)`` sends the previous reply
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
        address = f"inproc://raspy-worker-{next(_ids)}"
        self._user = self.context.socket(zmq.PAIR)
        self._user.bind(address)
        self._io_end = self.context.socket(zmq.PAIR)
        self._io_end.connect(address)
        self._thread = threading.Thread(target=self._io, name=f"mdp-{self.service.decode(errors='replace')}", daemon=True)
        self._thread.start()

    # -- the caller's side ------------------------------------------------------

    def recv(self, reply: p.Frames | None = None) -> p.Frames | None:
        """Send ``reply`` for the last request, then wait for the next one."""
        if self._stop.is_set():
            return None
        self._user.send_multipart([b"R", *(reply or [])])
        frames = self._user.recv_multipart()
        return frames[1:] if frames[0] == b"Q" else None

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
        self.close()

    def shutdown(self) -> None:
        """Stop: tell the broker, wake a caller blocked in :meth:`recv`."""
        self._stop.set()

    def close(self) -> None:
        self.shutdown()
        self._thread.join()
        self._user.close(linger=0)

    # -- the I/O thread -----------------------------------------------------------

    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.broker)
        sock.send_multipart(p.worker_message(p.READY, self.service))
        return sock

    def _io(self) -> None:
        pipe = self._io_end
        sock = self._connect()
        queue: deque[tuple[bytes, p.Frames]] = deque()
        current: bytes | None = None  # client whose request the caller is handling
        caller_waiting = False
        patience = self.heartbeat * self.liveness
        heard = time.monotonic()
        backoff = self.reconnect_min
        next_beat = heard + self.heartbeat
        poller = zmq.Poller()
        poller.register(pipe, zmq.POLLIN)
        poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            timeout = max(0.0, min(next_beat - time.monotonic(), 0.25))
            events = dict(poller.poll(timeout * 1000))
            if pipe in events:
                frames = pipe.recv_multipart()
                if current and len(frames) > 1:
                    sock.send_multipart(p.worker_message(p.REPLY, current, b"", *frames[1:]))
                current, caller_waiting = None, True
            if sock in events:
                frames = sock.recv_multipart()
                heard, backoff = time.monotonic(), self.reconnect_min
                self.connected.set()
                try:
                    command, rest = p.parse_worker(frames)
                except p.ProtocolError as exc:
                    self._drop(str(exc), frames)
                    command, rest = b"", []
                if command == p.REQUEST:
                    queue.append((rest[0], rest[2:]))
                elif command == p.DISCONNECT:
                    log.info("%s: broker sent DISCONNECT, reconnecting", self.service)
                    heard = 0.0
                elif command not in (p.HEARTBEAT, b""):
                    self._drop(f"{p.COMMANDS[command]} is not for workers", frames)
            if caller_waiting and queue:
                current, body = queue.popleft()
                caller_waiting = False
                pipe.send_multipart([b"Q", *body])
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat
                sock.send_multipart(p.worker_message(p.HEARTBEAT))
            if now - heard > patience:
                self.connected.clear()
                log.warning("%s: broker silent, reconnecting in %.1fs", self.service, backoff)
                poller.unregister(sock)
                sock.close()
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.reconnect_max)
                queue.clear()  # the broker requeues what the old socket held
                if current:
                    current = _STALE
                sock = self._connect()
                poller.register(sock, zmq.POLLIN)
                self.reconnects += 1
                heard = time.monotonic()
                next_beat = heard + self.heartbeat
        if not sock.closed:
            sock.send_multipart(p.worker_message(p.DISCONNECT))
            sock.close()
        pipe.send_multipart([b"S"])
        pipe.close(linger=0)
