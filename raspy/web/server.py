"""The status page's HTTP server: waitress within RasPy's bounds, with a graceful stop.

waitress reads every connection from one loop and hands only complete requests
to a fixed pool of worker threads, so a slow phone, or a thousand connections
that never finish their request, cost a few kilobytes each and no thread.
Beyond the bounds of :class:`Limits`: request line and headers over
``max_header_bytes`` get 431, a body over ``max_body_bytes`` gets 413 before
it is read (both close the connection), connections beyond ``connections``
wait in the listen backlog, and a connection that brings no complete request
within ``idle_timeout`` seconds of opening or of its last answer is closed,
however slowly it trickles.
"""
from __future__ import annotations

import logging
import resource
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from raspy.droplog import RateLimit
from raspy.heap import give_back

log = logging.getLogger(__name__)
access = logging.getLogger("raspy.web.access")
for _logger in (log, access, logging.getLogger("waitress")):
    RateLimit.install(_logger)
# waitress warns of its queue's depth on every request that waits for a thread, under the
# dispatcher's lock: a crowd is normal (it waits in the queue, bounded by ``connections``) and
# the warnings alone cost a crowd a third of its throughput
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8080
#: seconds between two looks at idle connections (and the longest the loop sleeps)
LOOP_TIMEOUT = 1.0
#: seconds a stop gives the requests already received, within the supervisor's stop timeout (5 s)
STOP_GRACE = 2.0
#: file descriptors kept for what is not a connection (ZeroMQ sockets, the board, files)
SPARE_FILES = 64
#: connections that must have closed since the most held before their memory is given back
BURST = 64


@dataclass(frozen=True)
class Limits:
    """The bounds of the server (the ``web`` executive's options of the same names)."""

    threads: int = 4                # worker threads running the app
    connections: int = 2000         # connections held at once; more wait in the listen backlog
    idle_timeout: float = 15.0      # seconds a connection may hold without a complete request
    max_header_bytes: int = 8192    # request line and headers, else 431
    max_body_bytes: int = 4096      # request body, else 413 before it is read


def within_file_limit(limits: Limits) -> Limits:
    """``limits`` with ``connections`` that this process can open: raises the soft open-file limit, or lowers them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.connections + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return limits
    log.warning("the open-file limit (hard %d) leaves room for %d connections, not %d",
                hard, hard - SPARE_FILES, limits.connections)
    return replace(limits, connections=max(1, hard - SPARE_FILES))


_MAKING_LOCK = threading.Lock()


class _Connection(HTTPChannel):
    """A connection whose idle time runs from its opening or its last answer, not from its last byte,
    and whose answer's lock is made when it is first needed."""

    def __init__(self, server: "_Listener", sock: Any, addr: Any, adj: Adjustments, map: dict | None = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.waiting_since = self.creation_time
        server.most_held = max(server.most_held, len(server.active_channels))

    # waitress gives each connection, as it opens, a Condition guarding its answer's buffers: 1.3 kB,
    # a third of what a half-open connection costs, and Python's allocator keeps what a slow-loris
    # made it grow to after the connections have gone. A connection needs it only once it has an
    # answer to send, or as it closes: it is made on first use (under a lock, as a worker and the
    # loop may both reach for it first).
    @property
    def outbuf_lock(self) -> threading.Condition:
        lock = self.__dict__.get("_outbuf_lock")
        if lock is None:
            with _MAKING_LOCK:
                lock = self.__dict__.setdefault("_outbuf_lock", threading.Condition())
        return lock

    @outbuf_lock.setter
    def outbuf_lock(self, unused: threading.Condition) -> None:
        """waitress's own, made in ``__init__``: dropped at once."""

    def writable(self) -> bool:
        # While a worker answers, it sends the answer itself. waitress's loop would wait to send
        # too: the socket is writable at once, the worker holds the buffer, and the loop spins,
        # taking the GIL from the worker it waits for (a keep-alive crowd: 10x the CPU per
        # request). The loop sends what is left once the answer is done, or if it piles up.
        if self.requests and self.total_outbufs_len < self.adj.outbuf_high_watermark:
            return self.will_close or self.close_when_flushed
        return bool(self.total_outbufs_len or self.will_close or self.close_when_flushed)

    def service(self) -> None:
        self.waiting_since = time.time()
        error = self.requests[0].error
        if error is not None:
            log.warning("refused a request from %s: %d %s (%s)", self.addr[0], error.code, error.reason, error.body)
        super().service()
        self.waiting_since = time.time()

    @property
    def idle(self) -> bool:
        """Nothing to answer and nothing left to send."""
        return not self.requests and not self.total_outbufs_len


class _Listener(TcpWSGIServer):
    """waitress's server with :class:`_Connection` and the idle rule."""

    channel_class = _Connection
    most_held = 0  # connections held at once since memory was last given back

    def maintenance(self, now: float) -> None:
        self._give_back_after_a_burst()
        cutoff = now - self.adj.channel_timeout
        partial = 0
        for channel in list(self.active_channels.values()):
            if channel.idle and channel.waiting_since < cutoff:
                channel.will_close = True
                partial += channel.request is not None
            elif not channel.requests and channel.last_activity < cutoff:
                channel.will_close = True  # a client that stopped reading its answer
        if partial:
            log.warning("closed %d connections that sent no complete request in %g s (idle_timeout)",
                        partial, self.adj.channel_timeout)

    def _give_back_after_a_burst(self) -> None:
        """Once most of a burst of connections has closed, hand the memory they took back to the system.

        Their objects are freed as they close, but the C heap keeps the pages (a thousand
        half-open connections: about 1 MB, for good). One trim when the count has fallen to half of
        its peak, and at least ``BURST`` below it; an idle server only compares two numbers.
        """
        held = len(self.active_channels)
        if self.most_held - held >= BURST and held <= self.most_held // 2:
            give_back()
            self.most_held = held


def logged(app: Callable) -> Callable:
    """``app`` writing one debug line per request to ``raspy.web.access`` (rate-limited)."""
    def wsgi(environ: dict, start_response: Callable) -> Any:
        if not access.isEnabledFor(logging.DEBUG):
            return app(environ, start_response)

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            access.debug("%s %s %s %s", environ.get("REMOTE_ADDR"), environ["REQUEST_METHOD"],
                         environ.get("PATH_INFO"), status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wsgi


class Server:
    """``app`` on ``host``:``port`` (0: any free port) within ``limits``.

    Run :meth:`serve_forever` in a thread; :meth:`stop` from another ends it,
    :meth:`close` releases the socket and the worker threads.
    """

    def __init__(self, app: Callable, host: str = DEFAULT_BIND, port: int = DEFAULT_PORT,
                 limits: Limits = Limits()) -> None:
        self.limits = within_file_limit(limits)
        self._map: dict[int, Any] = {}
        self._listener = _Listener(logged(app), map=self._map, adj=Adjustments(
            host=host, port=port, threads=self.limits.threads, ident="RasPy",
            connection_limit=self.limits.connections + 2,  # waitress counts its listener and trigger too
            channel_timeout=self.limits.idle_timeout, cleanup_interval=LOOP_TIMEOUT,
            asyncore_loop_timeout=LOOP_TIMEOUT, asyncore_use_poll=True,
            max_request_header_size=self.limits.max_header_bytes + 1,  # waitress refuses at the size itself
            max_request_body_size=self.limits.max_body_bytes + 1,
            log_socket_errors=False,  # a phone leaving the Wi-Fi is not news
        ))
        self._stopped = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.effective_host, int(self._listener.effective_port)

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`, then close every connection."""
        try:
            while not self._stopped.is_set():
                wasyncore.poll2(LOOP_TIMEOUT, self._map)
        finally:
            wasyncore.close_all(self._map)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Take no more connections or requests; answer those received for up to ``grace`` seconds; end the loop."""
        listener = self._listener
        listener.adj.channel_request_lookahead = -1  # no connection reads: a request in flight is the last one
        listener.trigger.pull_trigger(lambda: wasyncore.dispatcher.close(listener))  # in the loop's thread
        deadline = time.monotonic() + grace
        while not all(channel.idle for channel in list(listener.active_channels.values())):
            if time.monotonic() > deadline:
                log.warning("stopping with requests unanswered after %g s", grace)
                break
            time.sleep(0.02)
        self._stopped.set()
        listener.pull_trigger()

    def close(self) -> None:
        """Release the socket and the worker threads (after :meth:`serve_forever` has returned, or without it)."""
        wasyncore.close_all(self._map)
        self._listener.task_dispatcher.shutdown(timeout=1)
