"""A Majordomo (7/MDP) client with Lazy Pirate retries.

Each attempt that times out closes its socket and opens a new one, so a late
reply to an abandoned attempt goes to a socket that no longer exists and can
never be taken as the answer to a later request. The pipelined form keeps one
socket per request in flight for the same reason: a reply is matched to its
request by the socket it arrives on.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Iterable

import zmq

from raspy.errors import RequestTimeout
from raspy.mdp import protocol as p

log = logging.getLogger(__name__)

_NOARGS = object()


class MajorDomoClient:
    """Sends requests through the broker at ``broker``.

    ``timeout`` (seconds) is per attempt and defaults to more than a 1-Wire
    conversion; ``retries`` is the number of attempts.
    """

    def __init__(self, broker: str, timeout: float = 2.5, retries: int = 3, context: zmq.Context | None = None) -> None:
        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.broker = broker
        self.timeout = timeout
        self.retries = retries
        self.context = context or zmq.Context.instance()
        self._sockets: list[zmq.Socket] = []

    def _socket(self, index: int = 0) -> zmq.Socket:
        while len(self._sockets) <= index:
            self._sockets.append(self._open())
        return self._sockets[index]

    def _open(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.broker)
        return sock

    def _reopen(self, index: int) -> zmq.Socket:
        self._sockets[index].close()
        self._sockets[index] = self._open()
        return self._sockets[index]

    @staticmethod
    def _body(service: bytes, frames: list[bytes]) -> p.Frames:
        """Body of a broker reply, checked against the service asked for."""
        got, body = p.parse_client(frames)
        if got != service:
            raise p.ProtocolError(f"reply for {got!r} while asking {service!r}")
        return body

    def send(self, service: str | bytes, request: Iterable[bytes]) -> p.Frames:
        """Send ``request`` frames to ``service``; return the reply frames."""
        service = service.encode() if isinstance(service, str) else service
        message = p.client_request(service, list(request))
        sock = self._socket()
        for attempt in range(1, self.retries + 1):
            sock.send_multipart(message)
            if sock.poll(self.timeout * 1000):
                return self._body(service, sock.recv_multipart())
            log.debug("no reply from %s (attempt %d/%d)", service.decode(errors="replace"), attempt, self.retries)
            sock = self._reopen(0)
        raise RequestTimeout(f"no reply from {service.decode(errors='replace')} after {self.retries} attempts of {self.timeout}s")

    def call(self, service: str | bytes, command: str, args: Any = _NOARGS) -> tuple[int, Any]:
        """A RasPy request: ``(status, result)`` of ``command`` with ``args``."""
        frames = p.request(command) if args is _NOARGS else p.request(command, args)
        return p.parse_reply(self.send(service, frames))

    def send_many(self, service: str | bytes, requests: Iterable[list[bytes]], window: int = 16) -> list[p.Frames]:
        """Pipelined: up to ``window`` requests in flight; replies in request order."""
        service = service.encode() if isinstance(service, str) else service
        messages = [p.client_request(service, list(r)) for r in requests]
        replies: list[p.Frames] = [[] for _ in messages]
        waiting = deque(range(len(messages)))
        busy: dict[int, tuple[int, int, float]] = {}  # slot -> (request, attempt, deadline)
        free = list(range(min(window, len(messages))))
        poller = zmq.Poller()
        for slot in free:
            poller.register(self._socket(slot), zmq.POLLIN)

        def start(slot: int, index: int, attempt: int) -> None:
            self._sockets[slot].send_multipart(messages[index])
            busy[slot] = (index, attempt, time.monotonic() + self.timeout)

        while waiting or busy:
            while waiting and free:
                start(free.pop(), waiting.popleft(), 1)
            wait = max(0.0, min(deadline for _, _, deadline in busy.values()) - time.monotonic())
            ready = dict(poller.poll(wait * 1000))
            for slot, (index, attempt, deadline) in list(busy.items()):
                sock = self._sockets[slot]
                if sock in ready:
                    replies[index] = self._body(service, sock.recv_multipart())
                    del busy[slot]
                    free.append(slot)
                elif time.monotonic() > deadline:
                    if attempt >= self.retries:
                        raise RequestTimeout(f"no reply from {service.decode(errors='replace')} for request {index}")
                    poller.unregister(sock)
                    poller.register(self._reopen(slot), zmq.POLLIN)
                    start(slot, index, attempt + 1)
        return replies

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> "MajorDomoClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
