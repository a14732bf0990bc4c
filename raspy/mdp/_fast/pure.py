"""The Majordomo broker's dispatch core in plain Python.

This is the reference the compiled core is checked against: the same tests
run against both. It owns the MDP state (services, their request queues and
idle workers, every known worker) and moves frames on one ROUTER socket.
"""
from __future__ import annotations

import logging
import math
import select
import time
from collections import deque
from typing import Callable

import zmq

from raspy.curve import host_of_frame
from raspy.droplog import DropLog
from raspy.heap import give_back
from raspy.mdp import mmi
from raspy.mdp import protocol as p
from raspy.mdp.limits import FRAME_COST, BrokerLimits
from raspy.mdp.protocol import SERVICE_NAME

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
    return [f.bytes for f in frames], host_of_frame(frames[-1])


def name(service: bytes) -> str:
    """A service name as log lines print it."""
    return service.decode(errors="replace")


def purge(core: "BrokerCore", now: float) -> None:
    """The heartbeat-time work of either core: beat, drop the dead, expire, forget, give memory back.

    Not on the hot path (once per heartbeat interval), so both cores share this one.
    A worker busy with a request expires only if it was heard while busy (as
    RasPy's worker beats from a thread): one that is silent while busy (as the
    ZeroMQ Guide's single-threaded worker is) keeps its request until it
    replies, its connection closes or ``busy_timeout`` passes.
    """
    peers, limits = core.peers, core.limits
    for worker in list(core.workers.values()):
        if core.workers.get(worker.identity) is not worker:
            continue  # dropped meanwhile: a requeued request found its connection closed
        if worker.expiry < now and (worker.request is None or worker.beats_busy):
            peers.log(logging.WARNING, "worker %s of %s expired", worker.identity.hex(), name(worker.service.name))
            core.remove(worker)
        elif worker.request is not None and now - worker.busy_since > limits.busy_timeout:
            peers.log(logging.WARNING, "worker %s of %s busy for over %gs: dropped", worker.identity.hex(),
                      name(worker.service.name), limits.busy_timeout)
            worker.request.requeued = True  # a hung handler's request is not retried
            core.remove(worker)
            core.disconnect(worker.identity, "busy too long")
        elif not send(core.socket, [worker.identity, *p.worker_message(p.HEARTBEAT)]):
            peers.log(logging.WARNING, "worker %s of %s gone", worker.identity.hex(), name(worker.service.name))
            core.remove(worker)
    freed = 0
    for service, svc in list(core.services.items()):
        requests = svc.requests
        while requests and now - requests[0].queued_at > limits.request_expiry:
            core.unqueue(svc, requests.popleft())
            core.expired += 1
            freed += 1
            core.refusals.log(logging.WARNING, "request for %s expired after %gs with no worker",
                              name(service), limits.request_expiry)
        if not svc.workers and not requests:
            del core.services[service]
            core.unknown -= 1
            freed += 1
    if freed:
        give_back()  # what a storm of junk took, glibc would otherwise keep
    for rate in (core.drop, core.refusals, core.peers):
        rate.flush()


class Request:
    """A client request waiting for, or held by, a worker; ``size`` is what it counts for in the queue bounds."""

    __slots__ = ("client", "body", "queued_at", "requeued", "size")

    def __init__(self, client: bytes, body: list[bytes], queued_at: float, size: int) -> None:
        self.client = client
        self.body = body
        self.queued_at = queued_at
        self.requeued = False
        self.size = size


class Worker:
    """A worker connection: its service, when it expires, what it is doing, whether it beats while busy,
    and the host its connection is allowed as (CURVE's User-Id; '' in a plaintext house)."""

    __slots__ = ("identity", "service", "expiry", "request", "busy_since", "beats_busy", "host")

    def __init__(self, identity: bytes, service: "ServiceQueue", expiry: float, host: str = "") -> None:
        self.identity = identity
        self.service = service
        self.expiry = expiry
        self.host = host
        self.request: Request | None = None
        self.busy_since = 0.0
        self.beats_busy = False


class ServiceQueue:
    """One service name: requests in arrival order (and their bytes), idle workers longest-idle first."""

    __slots__ = ("name", "requests", "idle", "workers", "queued_bytes")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.requests: deque[Request] = deque()
        self.idle: deque[Worker] = deque()
        self.workers = 0
        self.queued_bytes = 0


class BrokerCore:
    """MDP routing between clients and workers on one ROUTER socket."""

    compiled = False
    service_type = ServiceQueue
    worker_type = Worker

    def __init__(self, socket: zmq.Socket, heartbeat: float = 2.5, liveness: int = 3,
                 limits: BrokerLimits = BrokerLimits(), authorize: Callable[[str, bytes], bool] | None = None,
                 may_call: Callable[[str, bytes], bool] | None = None, private: bytes = b"") -> None:
        self.socket = socket
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.limits = limits
        self.frame_cap = limits.max_frames + 1  # with the identity frame the ROUTER socket adds
        self.services: dict[bytes, ServiceQueue] = {}
        self.workers: dict[bytes, Worker] = {}
        #: rate-bounded log lines: malformed messages, refused or expired requests, workers coming and going
        self.drop, self.refusals, self.peers = DropLog(log), DropLog(log), DropLog(log)
        self.requests = self.replies = self.refused = self.expired = 0
        self.queued = self.queued_bytes = 0  # requests waiting for a worker, and what they count for
        self.unknown = 0  # services with no worker
        #: whether a host may serve a service: asked on READY with the sender's host (CURVE's User-Id)
        self.authorize = authorize
        #: whether a host may call a service: asked for a client request to a name under ``private`` only
        self.may_call = may_call
        self.private = private
        self.peer = ""
        #: hosts revoked while the broker runs: their workers are gone, their messages dropped (:meth:`cut`)
        self.cut_hosts: frozenset[str] = frozenset()
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
        if self.authorize is not None or self.may_call is not None:
            return self._drain_with_peer()
        for handled in range(BATCH):
            frames = recv(socket)
            if frames is None:
                return handled
            self.handle(frames)
        return BATCH

    def _drain_with_peer(self) -> int:
        """:meth:`drain` noting each sender's host in ``peer``, for :meth:`on_ready` and :meth:`on_client`."""
        for handled in range(BATCH):
            received = recv_with_peer(self.socket)
            if received is None:
                return handled
            frames, self.peer = received
            if self.peer in self.cut_hosts:
                self.drop(f"host {self.peer} was revoked", frames)
            else:
                self.handle(frames)
        return BATCH

    def handle(self, frames: list[bytes]) -> None:
        """One message from the ROUTER socket: identity, '', header, ..."""
        if len(frames) < 3 or frames[1] != b"":
            self.drop("no identity/empty envelope", frames)
            return
        if len(frames) > self.frame_cap:
            self.oversize(frames)
            return
        header = frames[2]
        if header == p.CLIENT:
            if len(frames) < 5 or not frames[3]:
                self.drop("client REQUEST must be '', MDPC01, service, body (one frame or more)", frames)
                return
            self.on_client(frames[0], frames[3], frames[4:])
        elif header == p.WORKER:
            if len(frames) >= 7 and frames[3] == p.REPLY and frames[4] and frames[5] == b"":
                self.on_reply(frames[0], frames[4], frames[6:])  # the hot path: a well-formed REPLY
            else:
                self.on_worker(frames)
        else:
            self.drop("unknown header", frames)

    # -- clients ----------------------------------------------------------------

    def on_client(self, client: bytes, service: bytes, body: list[bytes]) -> None:
        self.requests += 1
        if self.may_call is not None and service.startswith(self.private) and not self.may_call(self.peer, service):
            self.forbid(client, service, self.peer)
            return
        if service.startswith(p.MMI_PREFIX):
            self.reply(client, service, mmi.answer(self, service, body))
            return
        size = sum(map(len, body)) + FRAME_COST * (len(body) + 2)
        if size > self.limits.max_message:
            self.refuse(client, service, p.BAD_REQUEST, f"request over {self.limits.max_message} bytes")
            return
        svc = self.services.get(service) or self.new_service(client, service)
        if svc is None:
            return
        if not svc.idle and (full := self.full(svc, size)):
            self.refuse(client, service, p.ERROR, full)
            return
        self.queue(svc, Request(client, body, time.monotonic(), size))
        self.dispatch(svc)

    def reply(self, client: bytes, service: bytes, body: list[bytes]) -> None:
        self.replies += 1
        if not send(self.socket, [client, b"", p.CLIENT, service, *body]):
            self.refusals.log(logging.DEBUG, "client %s gone: reply dropped", client.hex())

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

    def oversize(self, frames: list[bytes]) -> None:
        """A message over ``max_frames``: a client request is refused, anything else dropped."""
        if len(frames) > 3 and frames[2] == p.CLIENT and frames[3]:
            self.requests += 1
            self.refuse(frames[0], frames[3], p.BAD_REQUEST, f"request over {self.limits.max_frames} frames")
        else:
            self.drop(f"message over {self.limits.max_frames} frames", frames[:6])

    def new_service(self, client: bytes, service: bytes) -> ServiceQueue | None:
        """A service for a client request to wait in, if its name is valid and the bound leaves room."""
        if not SERVICE_NAME.match(service):
            self.drop("service name is not 1-255 printable ASCII characters", [client, b"", p.CLIENT, service])
            return None
        if self.unknown >= self.limits.unknown_services:
            self.refuse(client, service, p.ERROR, f"no worker for {name(service)}, and "
                                                  f"{self.limits.unknown_services} services wait for one already")
            return None
        self.unknown += 1
        svc = self.services[service] = self.service_type(service)
        return svc

    def full(self, svc: ServiceQueue, size: int) -> str:
        """Why a request of ``size`` bytes may not wait for ``svc``'s workers; empty when it may."""
        limits = self.limits
        if len(svc.requests) >= limits.queue_requests:
            return f"queue of {name(svc.name)} full: {limits.queue_requests} requests wait already"
        if svc.queued_bytes + size > limits.queue_bytes:
            return f"queue of {name(svc.name)} full: its requests would take over {limits.queue_bytes} bytes"
        if self.queued >= limits.total_requests:
            return f"broker full: {limits.total_requests} requests wait already"
        if self.queued_bytes + size > limits.total_bytes:
            return f"broker full: waiting requests would take over {limits.total_bytes} bytes"
        return ""

    def refuse(self, client: bytes, service: bytes, status: int, reason: str) -> None:
        """Answer a request the broker will not queue, in RasPy's convention: ``status``, then the reason."""
        self.refused += 1
        self.refusals.log(logging.WARNING, "refused a request for %s: %s", name(service), reason)
        self.reply(client, service, p.reply(status, reason))

    def forbid(self, client: bytes, service: bytes, host: str) -> None:
        """Refuse a request for a service private to another host (403): it never reaches the worker."""
        self.refuse(client, service, p.FORBIDDEN, f"host {host or '(unnamed)'} may not call {name(service)}")

    def queue(self, svc: ServiceQueue, request: Request, first: bool = False) -> None:
        """Put a request in ``svc``'s queue (at its head when ``first``), counted in the bounds."""
        if first:
            svc.requests.appendleft(request)
        else:
            svc.requests.append(request)
        svc.queued_bytes += request.size
        self.queued += 1
        self.queued_bytes += request.size

    def unqueue(self, svc: ServiceQueue, request: Request) -> None:
        """Count out a request taken from ``svc``'s queue (the caller took it)."""
        svc.queued_bytes -= request.size
        self.queued -= 1
        self.queued_bytes -= request.size

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
            elif worker.request is not None and time.monotonic() - worker.busy_since > self.heartbeat:
                worker.beats_busy = True  # not a beat sent before the request reached it: one sent while busy
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
        elif not SERVICE_NAME.match(service):
            self.drop("READY: service name is not 1-255 printable ASCII characters", [identity, service])
        elif self.authorize is not None and not self.authorize(self.peer, service):
            self.drop(f"host {self.peer or '(unnamed)'} may not serve {name(service)}")  # counted as dropped
            self.disconnect(identity, "READY for a service of another host")
        else:
            svc = self.services.get(service)
            if svc is None:
                svc = self.services[service] = self.service_type(service)
            elif not svc.workers:
                self.unknown -= 1
            worker = self.worker_type(identity, svc, time.monotonic() + self.heartbeat * self.liveness, self.peer)
            self.workers[identity] = worker
            svc.workers += 1
            svc.idle.append(worker)
            self.peers.log(logging.INFO, "worker %s ready for %s", identity.hex(), name(service))
            send(self.socket, [identity, *p.worker_message(p.HEARTBEAT)])  # heard at once: it knows it is connected
            self.dispatch(svc)

    def cut(self, hosts: frozenset[str]) -> None:
        """Cut the revoked ``hosts``: their workers are dropped and told DISCONNECT (a well-behaved
        one reconnects, and the authenticator refuses its new handshake); whatever else comes on
        their connections, which ZeroMQ keeps open, is dropped from now on. Everyone else's stay."""
        for host in hosts - self.cut_hosts:
            self.peers.log(logging.WARNING, "host %s revoked: its workers are dropped, its messages refused", host)
        self.cut_hosts = frozenset(hosts)
        # the idle first: a busy one's requeued request must not go to one that is cut next
        for worker in sorted(self.workers.values(), key=lambda w: w.request is not None):
            if worker.host in hosts and self.workers.get(worker.identity) is worker:
                self.remove(worker)
                self.disconnect(worker.identity, f"host {worker.host} revoked")

    def disconnect(self, identity: bytes, reason: str) -> None:
        self.peers.log(logging.INFO, "disconnecting worker %s: %s", identity.hex(), reason)
        send(self.socket, [identity, *p.worker_message(p.DISCONNECT)])

    def forget(self, worker: Worker) -> None:
        """Drop a worker from the tables (not from its service's idle list)."""
        del self.workers[worker.identity]
        worker.service.workers -= 1
        if not worker.service.workers:
            self.unknown += 1

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
            self.queue(svc, request, first=True)  # over the bounds if it must: it was accepted
            self.peers.log(logging.WARNING, "worker %s lost with a request for %s: requeued",
                           worker.identity.hex(), name(svc.name))
            self.dispatch(svc)
        else:
            self.peers.log(logging.WARNING, "worker %s lost with a requeued request for %s: dropped",
                           worker.identity.hex(), name(svc.name))

    def dispatch(self, svc: ServiceQueue) -> None:
        """Hand queued requests of ``svc`` to its idle workers, oldest first."""
        requests, idle = svc.requests, svc.idle
        now = 0.0
        while requests and idle:
            worker = idle.popleft()
            request = requests[0]
            if not send(self.socket, [worker.identity, b"", p.WORKER, p.REQUEST, request.client, b"", *request.body]):
                self.peers.log(logging.INFO, "worker %s of %s gone", worker.identity.hex(), name(svc.name))
                self.forget(worker)  # its connection closed: the request stays first in line
                continue
            requests.popleft()
            svc.queued_bytes -= request.size
            self.queued -= 1
            self.queued_bytes -= request.size
            worker.request = request
            worker.busy_since = now or (now := time.monotonic())

    # -- time -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Heartbeat every worker, purge the dead, expire old requests, forget empty services."""
        self._next_beat = now + self.heartbeat
        purge(self, now)
