"""The Majordomo broker (7/MDP with 8/MMI): one ROUTER socket for clients and workers."""
from __future__ import annotations

import logging
import threading
from typing import Callable

import zmq

from raspy.curve import Curve
from raspy.mdp import _fast
from raspy.mdp import protocol as p
from raspy.mdp.limits import BrokerLimits

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5514"
#: Idle, the core looks at the stop flag this often (seconds); :meth:`Broker.stop` wakes it at once.
STOP_CHECK = 5.0


class Broker:
    """Binds the endpoint and runs the dispatch core until :meth:`stop`.

    Workers are heartbeated every ``heartbeat`` seconds and declared dead after
    ``liveness`` silent intervals; ``limits`` bounds what peers can make the
    broker hold (a frame over ``max_message`` is refused by libzmq itself, which
    drops that peer's connection before reading the frame). With ``curve`` the endpoint is a CURVE
    server (the caller runs the :class:`~raspy.curve.Authenticator`), ``authorize(host, service)``
    decides each READY, and ``may_call(host, service)`` each client request for a name under ``private``.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        heartbeat: float = 2.5,
        liveness: int = 3,
        limits: BrokerLimits = BrokerLimits(),
        context: zmq.Context | None = None,
        core: type | None = None,
        curve: Curve | None = None,
        authorize: Callable[[str, bytes], bool] | None = None,
        may_call: Callable[[str, bytes], bool] | None = None,
        private: bytes = b"",
    ) -> None:
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.router_mandatory = True  # an unroutable send fails: see _fast.pure.send
        self.socket.maxmsgsize = limits.max_message
        if curve is not None:
            curve.serve(self.socket)
        self.socket.bind(endpoint)
        self._waker = f"inproc://raspy-broker-{id(self):x}"
        self.socket.bind(self._waker)
        self.core = (core or _fast.BrokerCore)(self.socket, heartbeat=heartbeat, liveness=liveness, limits=limits,
                                               authorize=authorize, may_call=may_call, private=private)
        self._stop = threading.Event()

    def run(self) -> None:
        """Serve until :meth:`stop` is called (from a signal handler or another thread)."""
        log.info("broker on %s (%s core)", self.endpoint, _fast.IMPLEMENTATION)
        try:
            self.core.serve(self._stop.is_set, max_wait=STOP_CHECK)
        finally:
            self.socket.close()
            log.info("broker on %s stopped", self.endpoint)

    def stop(self) -> None:
        """Stop serving; the core, asleep on its socket, is woken by an MMI question on an inproc link."""
        self._stop.set()
        waker = self.context.socket(zmq.DEALER)
        waker.linger = 0
        try:
            waker.connect(self._waker)
            waker.send_multipart(p.client_request(b"mmi.service", [b"mmi.service"]), zmq.NOBLOCK)
        except zmq.ZMQError:  # closed already, or the queue is full: it is awake anyway
            pass
        finally:
            waker.close()
