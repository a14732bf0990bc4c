"""A broker process and the peers the broker tests put around it.

Every broker test runs against both dispatch cores (the ``core_env`` fixture):
the compiled one (skipped where it was not built) and its pure-Python twin.
Raw peers are written from the RFC, not with RasPy's classes.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq
from support import ask, broker_up, free_endpoint, live, wait_for

from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient

HEARTBEAT = 0.2  # seconds; short so that expiry and purge tests are quick


def compiled_available() -> bool:
    try:
        import raspy.mdp._fast.core  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["compiled", "pure"])
def core_env(request):
    if request.param == "compiled" and not compiled_available():
        pytest.skip("compiled core not built (no Cython or compiler)")
    return {"RASPY_PURE": "1"} if request.param == "pure" else {}


@pytest.fixture(params=["compiled", "pure"])
def bare_core(request, tmp_path):
    """``(BrokerCore class, ROUTER socket, its ipc endpoint)``: a core to drive from the test's own thread."""
    if request.param == "compiled" and not compiled_available():
        pytest.skip("compiled core not built (no Cython or compiler)")
    if request.param == "compiled":
        from raspy.mdp._fast.core import BrokerCore
    else:
        from raspy.mdp._fast.pure import BrokerCore
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.router_mandatory = True
    endpoint = f"ipc://{tmp_path}/broker"
    router.bind(endpoint)
    yield BrokerCore, router, endpoint
    router.close(linger=0)


class House:
    """A broker process and the workers a test starts around it."""

    def __init__(self, children, env: dict, log: Path | None = None) -> None:
        self.children = children
        self.env = env
        self.endpoint = free_endpoint()
        self.broker = None
        self.log = log

    def start_broker(self, *extra: str, heartbeat: float = HEARTBEAT):
        """``raspy run broker`` with ``extra`` flags; its log goes to :attr:`log` when one was given."""
        stderr = self.log.open("ab") if self.log else None
        try:
            self.broker = self.children.raspy("run", "broker", "--bind", self.endpoint, "--heartbeat", str(heartbeat),
                                              *extra, env=self.env, stderr=stderr)
        finally:
            if stderr:
                stderr.close()
        wait_for(lambda: broker_up(self.endpoint), what="broker up")
        return self.broker

    def start_echo(self, service: str = "echo", delay: float = 0.0, heartbeat: float = HEARTBEAT):
        return self.children.raspy("run", "echo", "--broker", self.endpoint, "--service", service,
                                   "--delay", str(delay), "--heartbeat", str(heartbeat), env=self.env)

    def client(self, timeout: float = 2.0, retries: int = 3) -> MajorDomoClient:
        return MajorDomoClient(self.endpoint, timeout=timeout, retries=retries)

    def ask(self, service: bytes, *body: bytes, timeout: float = 0.5) -> p.Frames | None:
        return ask(self.endpoint, service, *body, timeout=timeout)

    def live(self, service: str) -> bool:
        return live(self.endpoint, service)

    def workers(self) -> dict:
        return p.parse_reply(self.ask(b"mmi.workers"))[1]

    def stats(self) -> dict:
        """The broker's own counters and gauges (``mmi.broker``)."""
        return p.parse_reply(self.ask(b"mmi.broker"))[1]

    def idle(self, service: str) -> int:
        return self.workers().get(service, {}).get("idle", 0)


def raw_worker(ctx: zmq.Context, endpoint: str, service: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart([b"", b"MDPW01", b"\x01", service])
    return sock


def raw_client(ctx: zmq.Context, endpoint: str, kind: int = zmq.REQ) -> zmq.Socket:
    """A plain REQ (or DEALER) socket speaking MDP client frames itself."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


def recv_non_heartbeat(sock: zmq.Socket, timeout_ms: int = 3000) -> list[bytes]:
    deadline = time.monotonic() + timeout_ms / 1000
    while sock.poll(max(0, (deadline - time.monotonic()) * 1000)):
        frames = sock.recv_multipart()
        if frames[:3] != [b"", b"MDPW01", b"\x04"]:
            return frames
    raise AssertionError("no message")


class GuideWorker:
    """A worker as the ZeroMQ Guide's worker API writes it: one thread, one DEALER, no heartbeat while busy.

    It polls for a request for one heartbeat interval at a time, beats when a
    beat is due, reconnects after ``liveness`` silent polls or a DISCONNECT,
    and runs its handler (``delay`` seconds, then echo) in the same thread, so
    the broker hears nothing from it while the handler runs. A REQUEST that is
    not 6+ frames is ignored, as a strict worker does. Every run is recorded.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, service: bytes, delay: float,
                 heartbeat: float = HEARTBEAT, liveness: int = 3) -> None:
        self.ctx, self.endpoint, self.service = ctx, endpoint, service
        self.delay, self.heartbeat, self.liveness = delay, heartbeat, liveness
        self.runs: list[list[bytes]] = []
        self.ignored: list[list[bytes]] = []
        self.connects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="guide-worker")

    def __enter__(self) -> GuideWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.delay + 5)

    def _connect(self) -> zmq.Socket:
        sock = raw_worker(self.ctx, self.endpoint, self.service)
        self.connects += 1
        return sock

    def _serve(self) -> None:
        sock = self._connect()
        liveness, beat_at = self.liveness, time.monotonic() + self.heartbeat
        while not self._stop.is_set():
            if sock.poll(self.heartbeat * 1000):
                frames = sock.recv_multipart()
                liveness = self.liveness
                command = frames[2] if len(frames) >= 3 else b""
                if command == b"\x02" and len(frames) >= 6 and frames[4] == b"":
                    self.runs.append(frames[5:])
                    time.sleep(self.delay)  # the handler: silent all along
                    sock.send_multipart([b"", b"MDPW01", b"\x03", frames[3], b"", *frames[5:]])
                elif command == b"\x05":
                    sock.close()
                    sock = self._connect()
                elif command != b"\x04":
                    self.ignored.append(frames)
            else:
                liveness -= 1
                if liveness == 0:
                    sock.close()
                    sock = self._connect()
                    liveness = self.liveness
            if time.monotonic() > beat_at:
                sock.send_multipart([b"", b"MDPW01", b"\x04"])
                beat_at = time.monotonic() + self.heartbeat
        sock.close()


@pytest.fixture
def house(children, core_env):
    h = House(children, core_env)
    h.start_broker()
    return h
