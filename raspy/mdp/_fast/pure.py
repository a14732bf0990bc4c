"""The Majordomo broker's dispatch core in plain Python.

This is the reference the compiled core is checked against: the same tests
run against both. It owns the MDP state (services, their request queues and
idle workers, every known worker) and moves frames on one ROUTER socket.
"""
from __future__ import annotations

import logging
import math
import re
import select
import time
from collections import deque
from typing import Callable

import zmq

from raspy.droplog import DropLog
from raspy.mdp import protocol as p

log = logging.getLogger("raspy.mdp.broker")

#: Messages handled per wake-up before the clock is looked at again.
BATCH = 1000


#: Plain ints: pyzmq's ``zmq.SNDMORE | zmq.NOBLOCK`` builds an enum per frame.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def send(socket: zmq.Socket, frames: list[bytes]) -> bool:
    """Send ``[peer identity, frame, ...]`` without blocking on the ROUTER_MANDATORY socket; False if the peer is gone.

    A worker whose connection closed (``kill -9``) is known at once this way,
    rather than after its heartbeats expire. A peer whose queue is full is
    treated the same: the broker never blocks on one slow peer. Only the
    identity frame can fail so: libzmq takes the rest of a message once it took the first.
    """
    put = socket.send
    try:
        put(frames[0], _MORE_NOBLOCK)
    except zmq.ZMQError as exc:
        if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
            return False
        raise
    for frame in frames[1:-1]:
        put(frame, _MORE_NOBLOCK)
    put(frames[-1], _NOBLOCK)
    return True


def recv(socket: zmq.Socket) -> list[bytes] | None:
    """One whole message if one waits, else None (``recv_multipart`` without its per-frame overhead)."""
    try:
        frames = [socket.recv(_NOBLOCK)]
    except zmq.Again:
        return None
    while socket.get(_RCVMORE):
        frames.append(socket.recv(_NOBLOCK))
    return frames


def recv_with_peer(socket: zmq.Socket) -> tuple[list[bytes], str] | None:
    """:func:`recv`, and the host CURVE's authenticator named the sender's connection ('' if none)."""
    try:
        frames = socket.recv_multipart(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    return [f.bytes for f in frames], user_id(frames[-1])


def user_id(frame: zmq.Frame) -> str:
    """The User-Id of a frame from the wire (a ROUTER's identity frame has none)."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return ""


def purge(core: "BrokerCore", now: float) -> None:
    """The heartbeat-time work of either core: beat, drop the dead, expire, forget.

    Not on the hot path (once per heartbeat interval), so both cores share this one.
    """
    for worker in list(core.workers.values()):
        if core.workers.get(worker.identity) is not worker:
            continue  # dropped meanwhile: a requeued request found its connection closed
        if worker.expiry < now:
            log.warning("worker %s of %s expired", worker.identity.hex(), worker.service.name)
            core.remove(worker)
        elif worker.request is not None and now - worker.busy_since > core.busy_timeout:
            log.warning("worker %s busy for over %ss: dropped", worker.identity.hex(), core.busy_timeout)
            worker.request.requeued = True  # a hung handler's request is not retried
            core.remove(worker)
            core.disconnect(worker.identity, "busy too long")
        elif not send(core.socket, [worker.identity, *p.worker_message(p.HEARTBEAT)]):
            log.warning("worker %s of %s gone", worker.identity.hex(), worker.service.name)
            core.remove(worker)
    for name, svc in list(core.services.items()):
        while svc.requests and now - svc.requests[0].queued_at > core.request_expiry:
            svc.requests.popleft()
            log.warning("request for %s expired after %ss with no worker", name, core.request_expiry)
        if not svc.workers and not svc.requests:
            del core.services[name]


class Request:
    """A client request waiting for, or held by, a worker."""

    __slots__ = ("client", "body", "queued_at", "requeued")

    def __init__(self, client: bytes, body: list[bytes], queued_at: float) -> None:
        self.client = client
        self.body = body
        self.queued_at = queued_at
        self.requeued = False


class Worker:
    """A worker connection: its service, when it expires, what it is doing."""

    __slots__ = ("identity", "service", "expiry", "request", "busy_since")

    def __init__(self, identity: bytes, service: "ServiceQueue", expiry: float) -> None:
        self.identity = identity
        self.service = service
        self.expiry = expiry
        self.request: Request | None = None
        self.busy_since = 0.0


class ServiceQueue:
    """One service name: requests in arrival order, idle workers longest-idle first."""

    __slots__ = ("name", "requests", "idle", "workers")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.requests: deque[Request] = deque()
        self.idle: deque[Worker] = deque()
        self.workers = 0


class BrokerCore:
    """MDP routing between clients and workers on one ROUTER socket."""

    compiled = False
    service_type = ServiceQueue
    worker_type = Worker

    def __init__(
        self,
        socket: zmq.Socket,
        heartbeat: float = 2.5,
        liveness: int = 3,
        request_expiry: float = 30.0,
        busy_timeout: float = 300.0,
        authorize: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.socket = socket
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.request_expiry = request_expiry
        self.busy_timeout = busy_timeout
        self.services: dict[bytes, ServiceQueue] = {}
        self.workers: dict[bytes, Worker] = {}
        self.drop = DropLog(log)
        self.requests = 0
        self.replies = 0
        #: whether a host may serve a service: asked on READY with the sender's host (CURVE's User-Id)
        self.authorize = authorize
        self.peer = ""
        self.refused = 0
        self._next_beat = time.monotonic() + heartbeat

    # -- the loop -------------------------------------------------------------

    def serve(self, stopping: Callable[[], bool], max_wait: float = 0.25) -> None:
        """Route messages until ``stopping()`` is true (checked at least every ``max_wait`` s).

        Waits on the socket's ``ZMQ_FD`` with one ``poll()``: :meth:`drain`
        ends at a receive that found nothing, which took every pending
        command, so the fd turns readable again with the next message.
        """
        waiter = select.poll()
        waiter.register(self.socket.get(zmq.FD), select.POLLIN)
        while not stopping():
            if self.drain() < BATCH:
                waiter.poll(math.ceil(min(max_wait, max(0.0, self._next_beat - time.monotonic())) * 1000))
            if time.monotonic() >= self._next_beat:
                self.tick(time.monotonic())

    def drain(self) -> int:
        """Handle the messages waiting on the socket, at most ``BATCH``; how many were handled."""
        socket = self.socket
        if self.authorize is not None:
            return self._drain_with_peer()
        for handled in range(BATCH):
            frames = recv(socket)
            if frames is None:
                return handled
            self.handle(frames)
        return BATCH

    def _drain_with_peer(self) -> int:
        """:meth:`drain` noting each sender's host in ``peer``, for :meth:`on_ready`."""
        for handled in range(BATCH):
            received = recv_with_peer(self.socket)
            if received is None:
                return handled
            frames, self.peer = received
            self.handle(frames)
        return BATCH

    def handle(self, frames: list[bytes]) -> None:
        """One message from the ROUTER socket: identity, '', header, ..."""
        if len(frames) < 3 or frames[1] != b"":
            self.drop("no identity/empty envelope", frames)
            return
        header = frames[2]
        if header == p.CLIENT:
            if len(frames) < 4 or not frames[3]:
                self.drop("client message names no service", frames)
                return
            self.on_client(frames[0], frames[3], frames[4:])
        elif header == p.WORKER:
            if len(frames) >= 6 and frames[3] == p.REPLY and frames[4] and frames[5] == b"":
                self.on_reply(frames[0], frames[4], frames[6:])  # the hot path: a well-formed REPLY
            else:
                self.on_worker(frames)
        else:
            self.drop("unknown header", frames)

    # -- clients ----------------------------------------------------------------

    def on_client(self, client: bytes, service: bytes, body: list[bytes]) -> None:
        self.requests += 1
        if service.startswith(p.MMI_PREFIX):
            self.reply(client, service, self.mmi(service, body))
            return
        svc = self.services.get(service)
        if svc is None:
            svc = self.services[service] = ServiceQueue(service)
        svc.requests.append(Request(client, body, time.monotonic()))
        self.dispatch(svc)

    def reply(self, client: bytes, service: bytes, body: list[bytes]) -> None:
        self.replies += 1
        if not send(self.socket, [client, b"", p.CLIENT, service, *body]):
            log.debug("client %s gone: reply dropped", client.hex())

    # -- workers ----------------------------------------------------------------

    def on_reply(self, identity: bytes, client: bytes, body: list[bytes]) -> None:
        worker = self.workers.get(identity)
        if worker is None:
            self.disconnect(identity, "REPLY from unknown worker")
            return
        worker.expiry = time.monotonic() + self.heartbeat * self.liveness
        if worker.request is None or worker.request.client != client:
            self.drop("REPLY for a client the worker does not serve", [identity, client, b"", *body])
            return
        self.reply(client, worker.service.name, body)
        worker.request = None
        worker.service.idle.append(worker)
        if worker.service.requests:
            self.dispatch(worker.service)

    # The paths below are also the compiled core's (it takes these very methods): they are rare,
    # and make services and workers of the core's own types and hand out work through its dispatch().

    def on_worker(self, frames: list[bytes]) -> None:
        """Any worker message but a well-formed REPLY (:meth:`on_reply`), checked by ``parse_worker``."""
        try:
            command, rest = p.parse_worker(frames[1:])
        except p.ProtocolError as exc:
            self.drop(str(exc), frames)
            return
        identity = frames[0]
        worker = self.workers.get(identity)
        if worker is not None:
            worker.expiry = time.monotonic() + self.heartbeat * self.liveness
        if command == p.HEARTBEAT:
            if worker is None:
                self.disconnect(identity, "HEARTBEAT from unknown worker")
        elif command == p.READY:
            self.on_ready(identity, worker, rest[0])
        elif command == p.DISCONNECT:
            if worker is not None:
                self.remove(worker)
        else:  # REQUEST is the broker's to send (a well-formed REPLY took the hot path)
            self.drop("REQUEST sent by a worker", [identity, command])

    def on_ready(self, identity: bytes, worker: Worker | None, service: bytes) -> None:
        if worker is not None:
            self.remove(worker)
            self.disconnect(identity, "second READY")
        elif service.startswith(p.MMI_PREFIX):
            self.disconnect(identity, "READY for an mmi.* service")
        elif self.authorize is not None and not self.authorize(self.peer, service):
            self.refused += 1
            self.drop(f"host {self.peer or '(unnamed)'} may not serve {service.decode(errors='replace')}")
            self.disconnect(identity, "READY for a service of another host")
        else:
            svc = self.services.get(service)
            if svc is None:
                svc = self.services[service] = self.service_type(service)
            worker = self.worker_type(identity, svc, time.monotonic() + self.heartbeat * self.liveness)
            self.workers[identity] = worker
            svc.workers += 1
            svc.idle.append(worker)
            log.info("worker %s ready for %s", identity.hex(), service.decode(errors="replace"))
            send(self.socket, [identity, *p.worker_message(p.HEARTBEAT)])  # heard at once: it knows it is connected
            self.dispatch(svc)

    def disconnect(self, identity: bytes, reason: str) -> None:
        log.info("disconnecting worker %s: %s", identity.hex(), reason)
        send(self.socket, [identity, *p.worker_message(p.DISCONNECT)])

    def forget(self, worker: Worker) -> None:
        """Drop a worker from the tables (not from its service's idle list)."""
        del self.workers[worker.identity]
        worker.service.workers -= 1

    def remove(self, worker: Worker) -> None:
        """Forget a worker; its request goes back to the head of the queue, once."""
        svc = worker.service
        self.forget(worker)
        request = worker.request
        if request is None:
            svc.idle.remove(worker)
        elif not request.requeued:
            request.requeued = True
            worker.request = None
            svc.requests.appendleft(request)
            log.warning("worker %s lost with a request for %s: requeued", worker.identity.hex(), svc.name)
            self.dispatch(svc)
        else:
            log.warning("worker %s lost with a requeued request for %s: dropped", worker.identity.hex(), svc.name)

    def dispatch(self, svc: ServiceQueue) -> None:
        """Hand queued requests of ``svc`` to its idle workers, oldest first."""
        requests, idle = svc.requests, svc.idle
        now = 0.0
        while requests and idle:
            worker = idle.popleft()
            request = requests[0]
            if not send(self.socket, [worker.identity, b"", p.WORKER, p.REQUEST, request.client, b"", *request.body]):
                log.info("worker %s of %s gone", worker.identity.hex(), svc.name)
                self.forget(worker)  # its connection closed: the request stays first in line
                continue
            requests.popleft()
            worker.request = request
            worker.busy_since = now or (now := time.monotonic())

    # -- time -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Heartbeat every worker, purge the dead, expire old requests, forget empty services."""
        self._next_beat = now + self.heartbeat
        purge(self, now)

    # -- 8/MMI ------------------------------------------------------------------

    def mmi(self, service: bytes, body: list[bytes]) -> list[bytes]:
        return mmi_answer(self.services, service, body)


def live_services(services: dict) -> list[str]:
    """Names of the services that have at least one worker, sorted."""
    return sorted(n.decode(errors="replace") for n, s in services.items() if s.workers)


def mmi_answer(services: dict, service: bytes, body: list[bytes]) -> list[bytes]:
    """Answer an ``mmi.*`` request (8/MMI plus RasPy's discovery); shared by both cores."""
    if service == b"mmi.service":
        svc = services.get(body[0]) if body else None
        return [b"200" if svc is not None and svc.workers else b"404"]
    if service == b"mmi.services":
        return p.reply(p.OK, live_services(services))
    if service == b"mmi.discovery":
        try:
            pattern = re.compile(body[0].decode()) if body else None
        except (re.error, UnicodeDecodeError) as exc:
            return p.reply(p.BAD_REQUEST, f"bad regular expression: {exc}")
        if pattern is None:
            return p.reply(p.BAD_REQUEST, "mmi.discovery needs a regular expression")
        return p.reply(p.OK, [n for n in live_services(services) if pattern.search(n)])
    if service == b"mmi.workers":
        return p.reply(p.OK, {
            n.decode(errors="replace"): {"workers": s.workers, "idle": len(s.idle), "queued": len(s.requests)}
            for n, s in services.items()
        })
    return [b"501"]
