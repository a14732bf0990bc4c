# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Majordomo broker's dispatch core, compiled.

Same state and behaviour as :mod:`raspy.mdp._fast.pure`, but frames stay libzmq
messages (``zmq_msg_t``) from receive to send: a request's client address and
body are moved into the queued request, handed to the worker as reference-
counted copies (kept for a requeue if the worker dies), and a reply's frames
are sent on to the client as received. The only Python objects made per
message are the service name or the worker identity used as dictionary keys.

libzmq is called through function pointers looked up in the libzmq that pyzmq
already loaded (``dlsym`` on pyzmq's own extension), on the socket handle pyzmq
gives out as ``Socket.underlying``: one libzmq in the process, no zmq.h and no
link step. Rare messages (READY, HEARTBEAT, DISCONNECT, MMI, anything
malformed or refused) become ``list[bytes]`` and are handled by the twin's own
methods. The bounds a request is checked against on its way in are C integers.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport errno as c_errno
from libc.math cimport ceil
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy
from posix.dlfcn cimport RTLD_NOW, dlopen, dlsym
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import errno
import logging
import os
from collections import deque

import zmq

from raspy.mdp import mmi
from raspy.mdp import protocol as p
from raspy.mdp._fast import pure
from raspy.mdp._fast.pure import BATCH, name, purge, send
from raspy.mdp.limits import FRAME_COST, BrokerLimits
from raspy.droplog import DropLog

log = logging.getLogger("raspy.mdp.broker")

cdef extern from "<dlfcn.h>" nogil:
    enum: RTLD_NOLOAD

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

cdef extern from *:
    """
    /* The layout of libzmq's zmq.h (4.x), so that no zmq.h is needed to build. */
    typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } raspy_msg_t;
    """
    ctypedef struct msg_t "raspy_msg_t":
        pass

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum: POLLIN
    int poll(pollfd *fds, unsigned long nfds, int timeout)

ctypedef int (*f_msg)(msg_t *) nogil
ctypedef int (*f_msg_size)(msg_t *, size_t) nogil
ctypedef int (*f_msg_io)(msg_t *, void *, int) nogil
ctypedef int (*f_msg_msg)(msg_t *, msg_t *) nogil
ctypedef void *(*f_data)(msg_t *) nogil
ctypedef size_t (*f_size)(msg_t *) nogil
ctypedef int (*f_errno)() nogil
ctypedef void (*f_version)(int *, int *, int *) nogil
ctypedef const char *(*f_gets)(msg_t *, const char *) nogil

cdef f_msg msg_init, msg_close, msg_more
cdef f_msg_size msg_init_size
cdef f_msg_io msg_send, msg_recv
cdef f_msg_msg msg_copy, msg_move
cdef f_data msg_data
cdef f_size msg_size
cdef f_errno zmq_errno
cdef f_gets msg_gets

# Stable across libzmq 4.x (zmq.h), and errno values of this platform.
cdef enum:
    DONTWAIT = 1
    SNDMORE = 2
cdef int EAGAIN = errno.EAGAIN
cdef int EHOSTUNREACH = errno.EHOSTUNREACH
cdef int EINTR = errno.EINTR
cdef Py_ssize_t FRAME_BYTES = FRAME_COST


cdef void *_symbol(void *lib, bytes name) except NULL:
    cdef void *found = dlsym(lib, name)
    if found == NULL:
        raise ImportError(f"pyzmq's libzmq does not export {name.decode()}")
    return found


def _bind_libzmq() -> None:
    """Point the function pointers at the libzmq pyzmq loaded (never load a second one)."""
    global msg_init, msg_close, msg_more, msg_init_size, msg_send, msg_recv
    global msg_copy, msg_move, msg_data, msg_size, zmq_errno, msg_gets
    try:
        from zmq.backend.cython import _zmq as backend
    except ImportError:  # pyzmq < 26 split its backend into several modules
        from zmq.backend.cython import socket as backend
    cdef void *lib = dlopen(os.fsencode(backend.__file__), RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise ImportError("pyzmq's Cython backend is not loaded")
    msg_init = <f_msg>_symbol(lib, b"zmq_msg_init")
    msg_close = <f_msg>_symbol(lib, b"zmq_msg_close")
    msg_more = <f_msg>_symbol(lib, b"zmq_msg_more")
    msg_init_size = <f_msg_size>_symbol(lib, b"zmq_msg_init_size")
    msg_send = <f_msg_io>_symbol(lib, b"zmq_msg_send")
    msg_recv = <f_msg_io>_symbol(lib, b"zmq_msg_recv")
    msg_copy = <f_msg_msg>_symbol(lib, b"zmq_msg_copy")
    msg_move = <f_msg_msg>_symbol(lib, b"zmq_msg_move")
    msg_data = <f_data>_symbol(lib, b"zmq_msg_data")
    msg_size = <f_size>_symbol(lib, b"zmq_msg_size")
    zmq_errno = <f_errno>_symbol(lib, b"zmq_errno")
    msg_gets = <f_gets>_symbol(lib, b"zmq_msg_gets")
    cdef int major = 0, minor = 0, patch = 0
    (<f_version>_symbol(lib, b"zmq_version"))(&major, &minor, &patch)
    if (major, minor, patch) != zmq.zmq_version_info() or sizeof(msg_t) != 64:
        raise ImportError(f"libzmq {major}.{minor}.{patch} found is not pyzmq's {zmq.zmq_version()}")


_bind_libzmq()


cdef inline double monotonic() noexcept nogil:
    """``time.monotonic()`` without a Python float (the same clock on Linux)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline bytes as_bytes(msg_t *m):
    return PyBytes_FromStringAndSize(<char *>msg_data(m), msg_size(m))


cdef inline bint equals(msg_t *m, const char *data, size_t size) noexcept:
    return msg_size(m) == size and memcmp(msg_data(m), data, size) == 0


cdef inline bint same(msg_t *a, msg_t *b) noexcept:
    return equals(a, <char *>msg_data(b), msg_size(b))


cdef str user_id(msg_t *m):
    """The User-Id CURVE's authenticator gave the sender's connection, '' if none."""
    cdef const char *value = msg_gets(m, b"User-Id")
    return "" if value == NULL else value.decode(errors="replace")


cdef object zmq_error():
    return zmq.ZMQError(zmq_errno())


@cython.freelist(64)
cdef class Request:
    """A client request waiting for, or held by, a worker: its frames as libzmq messages."""

    cdef msg_t client_msg
    cdef msg_t *body
    cdef Py_ssize_t nbody
    cdef public double queued_at
    cdef public bint requeued
    cdef public Py_ssize_t size

    def __cinit__(self):
        msg_init(&self.client_msg)
        self.body = NULL
        self.nbody = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        msg_close(&self.client_msg)
        for i in range(self.nbody):
            msg_close(&self.body[i])
        free(self.body)

    @property
    def client(self) -> bytes:
        return as_bytes(&self.client_msg)


cdef class ServiceQueue:
    """One service name: requests in arrival order (and their bytes), idle workers longest-idle first."""

    cdef public bytes name
    cdef public object requests
    cdef public object idle
    cdef public int workers
    cdef public Py_ssize_t queued_bytes

    def __init__(self, bytes name):
        self.name = name
        self.requests = deque()
        self.idle = deque()
        self.workers = 0
        self.queued_bytes = 0


cdef class Worker:
    """A worker connection: its service, when it expires, what it is doing, whether it beats while busy."""

    cdef public bytes identity
    cdef public ServiceQueue service
    cdef public double expiry
    cdef public Request request
    cdef public double busy_since
    cdef public bint beats_busy

    def __init__(self, bytes identity, ServiceQueue service, double expiry):
        self.identity = identity
        self.service = service
        self.expiry = expiry
        self.request = None
        self.busy_since = 0.0
        self.beats_busy = False


cdef class BrokerCore:
    """MDP routing between clients and workers on one ROUTER socket."""

    compiled = True
    service_type = ServiceQueue
    worker_type = Worker
    # READY, HEARTBEAT, DISCONNECT, malformed messages, refusals and losing a worker are rare:
    # the twin's methods serve both cores
    on_worker = pure.BrokerCore.on_worker
    on_ready = pure.BrokerCore.on_ready
    disconnect = pure.BrokerCore.disconnect
    forget = pure.BrokerCore.forget
    remove = pure.BrokerCore.remove
    oversize = pure.BrokerCore.oversize
    new_service = pure.BrokerCore.new_service
    full = pure.BrokerCore.full
    refuse = pure.BrokerCore.refuse
    forbid = pure.BrokerCore.forbid
    queue = pure.BrokerCore.queue
    unqueue = pure.BrokerCore.unqueue

    cdef readonly object socket
    cdef void *zsock
    cdef msg_t *msgs
    cdef Py_ssize_t capacity
    cdef public double heartbeat
    cdef public int liveness
    cdef public object limits
    cdef public Py_ssize_t frame_cap
    cdef Py_ssize_t max_message, queue_requests, queue_bytes, total_requests, total_bytes
    cdef public dict services
    cdef public dict workers
    cdef public object drop, refusals, peers
    cdef public long long requests, replies, refused, expired
    cdef public Py_ssize_t queued, queued_bytes, unknown
    cdef public object authorize, may_call
    cdef public bytes private
    cdef public str peer
    cdef double _next_beat

    def __cinit__(self):
        self.msgs = NULL
        self.capacity = 0

    def __init__(self, socket, double heartbeat=2.5, int liveness=3, limits=BrokerLimits(), authorize=None,
                 may_call=None, bytes private=b""):
        self.socket = socket
        self.zsock = <void *><size_t>socket.underlying
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.limits = limits
        self.frame_cap = limits.max_frames + 1  # with the identity frame the ROUTER socket adds
        self.max_message, self.queue_requests = limits.max_message, limits.queue_requests
        self.queue_bytes, self.total_requests, self.total_bytes = limits.queue_bytes, limits.total_requests, limits.total_bytes
        self.services = {}
        self.workers = {}
        self.drop, self.refusals, self.peers = DropLog(log), DropLog(log), DropLog(log)
        self.requests = self.replies = self.refused = self.expired = 0
        self.queued = self.queued_bytes = self.unknown = 0
        self.authorize = authorize
        self.may_call = may_call
        self.private = private
        self.peer = ""
        self._next_beat = monotonic() + heartbeat
        self._reserve(16)

    def __dealloc__(self):
        free(self.msgs)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef msg_t *grown
        if n > self.capacity:
            grown = <msg_t *>realloc(self.msgs, n * sizeof(msg_t))
            if grown == NULL:
                raise MemoryError()
            self.msgs, self.capacity = grown, n
        return 0

    cdef void _shrink(self) noexcept:
        """Back to the usual room for frames after a message over ``max_frames`` made it grow."""
        cdef msg_t *smaller = <msg_t *>realloc(self.msgs, 16 * sizeof(msg_t))
        if smaller != NULL:
            self.msgs, self.capacity = smaller, 16

    # -- the loop -------------------------------------------------------------

    def serve(self, stopping, double max_wait=0.25) -> None:
        """Route messages until ``stopping()`` is true (checked at least every ``max_wait`` s).

        Waits with one ``poll()`` on the socket's ``ZMQ_FD`` rather than
        ``zmq_poll`` (which polls twice and asks for ``ZMQ_EVENTS`` twice per
        wake-up). That is safe because :meth:`drain` stops only at a receive
        that found nothing: it has taken every pending command, so the fd
        becomes readable again when the next message arrives.
        """
        cdef pollfd item
        cdef double wait
        cdef int timeout, rc
        item.fd = self.socket.getsockopt(zmq.FD)
        item.events = POLLIN
        while not stopping():
            if self.drain() < BATCH:
                wait = min(max_wait, max(0.0, self._next_beat - monotonic()))
                timeout = <int>ceil(wait * 1000)
                with nogil:
                    rc = poll(&item, 1, timeout)
                if rc < 0 and c_errno != EINTR:
                    raise OSError(c_errno, os.strerror(c_errno))
                PyErr_CheckSignals()
            if monotonic() >= self._next_beat:
                self.tick(monotonic())

    cpdef int drain(self) except -1:
        """Handle the messages waiting on the socket, at most ``BATCH``; how many were handled."""
        cdef int handled = 0
        cdef Py_ssize_t n
        while handled < BATCH:
            n = self._recv()
            if n == 0:
                break
            try:
                self._handle(n)
            finally:
                self._close(n)
                if self.capacity > 16 and n > self.frame_cap:
                    self._shrink()
            handled += 1
        return handled

    def handle(self, list frames) -> None:
        """One message from the ROUTER socket: identity, '', header, ..."""
        cdef Py_ssize_t i, n = len(frames)
        cdef bytes frame
        self._reserve(n)
        for i in range(n):
            frame = frames[i]
            msg_init_size(&self.msgs[i], PyBytes_GET_SIZE(frame))
            memcpy(msg_data(&self.msgs[i]), PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
        try:
            self._handle(n)
        finally:
            self._close(n)

    cdef Py_ssize_t _recv(self) except -1:
        """Receive one whole message into ``msgs``; its frame count, 0 when none waits."""
        cdef Py_ssize_t n = 0
        while True:
            if n == self.capacity:
                self._reserve(2 * n)
            msg_init(&self.msgs[n])
            if msg_recv(&self.msgs[n], self.zsock, DONTWAIT if n == 0 else 0) < 0:
                msg_close(&self.msgs[n])
                if zmq_errno() == EINTR and n:
                    continue  # the rest of a message is already here: try again
                if n == 0 and zmq_errno() in (EAGAIN, EINTR):
                    return 0
                self._close(n)
                raise zmq_error()
            n += 1
            if not msg_more(&self.msgs[n - 1]):
                return n

    cdef void _close(self, Py_ssize_t n) noexcept:
        cdef Py_ssize_t i
        for i in range(n):
            msg_close(&self.msgs[i])

    cdef list _frames(self, Py_ssize_t start, Py_ssize_t n):
        return [as_bytes(&self.msgs[i]) for i in range(start, n)]

    cdef int _handle(self, Py_ssize_t n) except -1:
        cdef msg_t *m = self.msgs
        if n < 3 or msg_size(&m[1]) != 0:
            self.drop("no identity/empty envelope", self._frames(0, min(n, 6)))
        elif n > self.frame_cap:
            self.oversize(self._frames(0, min(n, 6)))
        elif equals(&m[2], b"MDPC01", 6):
            if n < 5 or msg_size(&m[3]) == 0:
                self.drop("client REQUEST must be '', MDPC01, service, body (one frame or more)", self._frames(0, n))
            else:
                self._on_client(n)
        elif equals(&m[2], b"MDPW01", 6):
            if n >= 7 and equals(&m[3], b"\x03", 1) and msg_size(&m[4]) and not msg_size(&m[5]):
                self._on_reply(n)
            else:
                if self.authorize is not None:
                    self.peer = user_id(&m[2])  # READY is authorised by the sender's host
                self.on_worker(self._frames(0, n))
        else:
            self.drop("unknown header", self._frames(0, n))
        return 0

    # -- clients ----------------------------------------------------------------

    cdef int _on_client(self, Py_ssize_t n) except -1:
        cdef msg_t *m = self.msgs
        cdef bytes service = as_bytes(&m[3])
        cdef ServiceQueue svc
        cdef Request request
        cdef Py_ssize_t i, size = FRAME_BYTES * (n - 2)
        cdef str host
        self.requests += 1
        if self.may_call is not None and service.startswith(self.private):
            host = user_id(&m[2])  # a service private to one host: the caller's host decides
            if not self.may_call(host, service):
                self.forbid(as_bytes(&m[0]), service, host)
                return 0
        if service.startswith(p.MMI_PREFIX):
            self.reply(as_bytes(&m[0]), service, mmi.answer(self, service, self._frames(4, n)))
            return 0
        for i in range(4, n):
            size += msg_size(&m[i])
        if size > self.max_message:
            self.refuse(as_bytes(&m[0]), service, p.BAD_REQUEST, f"request over {self.max_message} bytes")
            return 0
        svc = self.services.get(service)
        if svc is None:
            svc = self.new_service(as_bytes(&m[0]), service)
            if svc is None:
                return 0
        if not svc.idle and (len(svc.requests) >= self.queue_requests or svc.queued_bytes + size > self.queue_bytes
                             or self.queued >= self.total_requests or self.queued_bytes + size > self.total_bytes):
            self.refuse(as_bytes(&m[0]), service, p.ERROR, self.full(svc, size))
            return 0
        request = Request.__new__(Request)
        msg_move(&request.client_msg, &m[0])
        request.body = <msg_t *>malloc((n - 4) * sizeof(msg_t))  # n >= 5: 7/MDP gives a body frame at least
        if request.body == NULL:
            raise MemoryError()
        for i in range(n - 4):
            msg_init(&request.body[i])
            msg_move(&request.body[i], &m[4 + i])
            request.nbody = i + 1
        request.queued_at = monotonic()
        request.size = size
        svc.requests.append(request)
        svc.queued_bytes += size
        self.queued += 1
        self.queued_bytes += size
        self.dispatch(svc)
        return 0

    def reply(self, bytes client, bytes service, list body) -> None:
        self.replies += 1
        if not send(self.socket, [client, b"", p.CLIENT, service, *body]):
            self.refusals.log(logging.DEBUG, "client %s gone: reply dropped", client.hex())

    # -- workers ----------------------------------------------------------------

    cdef int _on_reply(self, Py_ssize_t n) except -1:
        """REPLY: pass the client address and body frames on as received."""
        cdef msg_t *m = self.msgs
        cdef bytes identity = as_bytes(&m[0])
        cdef Worker worker = self.workers.get(identity)
        cdef ServiceQueue svc
        cdef Py_ssize_t i
        if worker is None:
            self.disconnect(identity, "REPLY from unknown worker")
            return 0
        worker.expiry = monotonic() + self.heartbeat * self.liveness
        if worker.request is None or not same(&worker.request.client_msg, &m[4]):
            self.drop("REPLY for a client the worker does not serve", [identity, *self._frames(4, n)])
            return 0
        svc = worker.service
        if self._send(&m[4], SNDMORE) == 0:
            self._send_bytes(b"", 0, SNDMORE)
            self._send_bytes(b"MDPC01", 6, SNDMORE)
            self._send_bytes(PyBytes_AS_STRING(svc.name), PyBytes_GET_SIZE(svc.name), SNDMORE if n > 6 else 0)
            for i in range(6, n):
                self._send(&m[i], SNDMORE if i < n - 1 else 0)
        else:
            self.refusals.log(logging.DEBUG, "client %s gone: reply dropped", as_bytes(&m[4]).hex())
        self.replies += 1
        worker.request = None
        svc.idle.append(worker)
        if svc.requests:
            self.dispatch(svc)
        return 0

    cpdef int dispatch(self, ServiceQueue svc) except -1:
        """Hand queued requests of ``svc`` to its idle workers, oldest first."""
        cdef Worker worker
        cdef Request request
        cdef Py_ssize_t i
        cdef double now = 0.0
        while svc.requests and svc.idle:
            worker = svc.idle.popleft()
            if self._send_bytes(PyBytes_AS_STRING(worker.identity), PyBytes_GET_SIZE(worker.identity), SNDMORE):
                self.peers.log(logging.INFO, "worker %s of %s gone", worker.identity.hex(), name(svc.name))
                self.forget(worker)  # its connection closed: the request stays first in line
                continue
            request = svc.requests.popleft()
            svc.queued_bytes -= request.size
            self.queued -= 1
            self.queued_bytes -= request.size
            worker.request = request
            if now == 0.0:
                now = monotonic()
            worker.busy_since = now
            self._send_bytes(b"", 0, SNDMORE)
            self._send_bytes(b"MDPW01", 6, SNDMORE)
            self._send_bytes(b"\x02", 1, SNDMORE)
            self._send_copy(&request.client_msg, SNDMORE)
            self._send_bytes(b"", 0, SNDMORE if request.nbody else 0)
            for i in range(request.nbody):
                self._send_copy(&request.body[i], SNDMORE if i < request.nbody - 1 else 0)
        return 0

    # -- sending ----------------------------------------------------------------

    cdef int _send(self, msg_t *m, int flags) except -1:
        """Send (and so empty) ``m`` without blocking; 1 when the peer is gone, as ``pure.send`` says."""
        cdef int err
        if msg_send(m, self.zsock, flags | DONTWAIT) < 0:
            err = zmq_errno()
            if err == EHOSTUNREACH or err == EAGAIN:
                return 1
            raise zmq_error()
        return 0

    cdef int _send_copy(self, msg_t *m, int flags) except -1:
        """Send a copy of ``m`` that shares its buffer (libzmq counts references)."""
        cdef msg_t copy
        msg_init(&copy)
        msg_copy(&copy, m)
        try:
            return self._send(&copy, flags)
        finally:
            msg_close(&copy)

    cdef int _send_bytes(self, const char *data, size_t size, int flags) except -1:
        cdef msg_t frame
        msg_init_size(&frame, size)
        memcpy(msg_data(&frame), data, size)
        try:
            return self._send(&frame, flags)
        finally:
            msg_close(&frame)

    # -- time -------------------------------------------------------------------

    def tick(self, double now) -> None:
        """Heartbeat every worker, purge the dead, expire old requests, forget empty services."""
        self._next_beat = now + self.heartbeat
        purge(self, now)
