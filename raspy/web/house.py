"""The production data sources of the status page: the board, the broker's MMI, the kv map.

Nothing here makes a browser wait on the network: the board is shared memory,
the kv map is kept current by a subscriber thread, and the broker is asked by a
background thread whose last answer is served (with its age) to every request.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from raspy.errors import RequestTimeout
from raspy.house.board import Board, BoardError, SlotState, State
from raspy.house.control import NotRunning, send_command
from raspy.house.health import host_health
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state import keys
from raspy.state.kv.client import KvSubscriberClient
from raspy.state.kv.message import PUBLISHER_ENDPOINT, SNAPSHOT_ENDPOINT
from raspy.web.app import Unavailable
from raspy.web.hosts import HostSummaries
from raspy.web.readings import DeviceReadings, EventLog, ScenarioStates


#: Seconds a person's action (or a plot) waits for the service it asks.
CALL_TIMEOUT = 5.0


def executive_view(state: SlotState, now_mono: float, stale_after: float) -> dict[str, Any]:
    """One board slot in the API's shape; ``ready`` means running and beating."""
    live = state.state in (State.STARTING, State.RUNNING) and state.pid > 0
    last = state.last_exit
    return {
        "name": state.name,
        "state": str(state.state),
        "pid": state.pid if live else None,
        "started": state.started or None,
        "uptime": round(now_mono - state.started_mono, 3) if live and state.started_mono else None,
        "restarts": state.restarts,
        "last_exit": {"code": last.code, "reason": last.reason, "at": last.at} if last else None,
        "next_start": state.next_start or None,
        "heartbeat_age": round(state.heartbeat_age(now_mono), 3) if live else None,
        "requests": state.requests,
        "replies": state.replies,
        "errors": state.errors,
        "bytes_in": state.bytes_in,
        "bytes_out": state.bytes_out,
        "log_dropped": state.log_dropped,  # output its log file did not take (disk full?)
        "ready": state.state == State.RUNNING and not state.is_stale(now_mono, stale_after),
    }


def supervisor_restarter(state_dir: Path, timeout: float = 5.0) -> Callable[[str], str]:
    """Restart through the supervisor's control socket, as ``raspy restart NAME`` does."""
    def restart(name: str) -> str:
        try:
            reply = send_command(state_dir, f"restart {name}", timeout=timeout)
        except (NotRunning, OSError) as exc:
            raise Unavailable(str(exc)) from None
        if not reply.get("ok"):
            raise Unavailable(reply.get("message") or "the supervisor refused")
        return str(reply.get("message", ""))
    return restart


class MmiCache:
    """The broker's ``mmi.workers`` answer, refreshed every ``interval`` s by a thread while read.

    A browser gets the last answer and its age; a dead broker costs the thread
    one ``timeout``, never a web request. Nobody reading (no page open): the
    thread sleeps without a timer; the next read gets the last answer and wakes
    it, and the reads after that get a fresh one.
    """

    def __init__(self, broker: str, interval: float = 5.0, timeout: float = 1.0) -> None:
        self.broker = broker
        self.interval = interval
        self.timeout = timeout
        self._answer: dict[str, Any] = {"services": [], "at": None, "up": False, "error": "not asked yet"}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._read = threading.Event()  # someone read the answer since the last refresh (or stop)
        self._thread: threading.Thread | None = None

    def refresh(self, client: MajorDomoClient) -> None:
        """Ask the broker once and keep the answer (or why there is none)."""
        try:
            status, workers = p.parse_reply(client.send("mmi.workers", []))
            if status != p.OK or not isinstance(workers, dict):
                raise p.ProtocolError(f"mmi.workers answered {status}")
        except (RequestTimeout, p.ProtocolError) as exc:
            with self._lock:
                self._answer = dict(self._answer, up=False, error=str(exc))
            return
        services = [{"name": str(name), "workers": int(info.get("workers", 0)), "idle": int(info.get("idle", 0)),
                     "queued": int(info.get("queued", 0))} for name, info in sorted(workers.items())]
        with self._lock:
            self._answer = {"services": services, "at": time.monotonic(), "up": True, "error": None}

    def _run(self) -> None:
        with MajorDomoClient(self.broker, timeout=self.timeout, retries=1) as client:
            while True:
                self._read.clear()
                self.refresh(client)
                if self._stop.wait(self.interval):
                    return
                self._read.wait()
                if self._stop.is_set():
                    return

    def start(self) -> "MmiCache":
        self._thread = threading.Thread(target=self._run, name="web-mmi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._read.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def services(self) -> dict[str, Any]:
        self._read.set()
        with self._lock:
            answer = self._answer
        at = answer["at"]
        return {
            "broker": {"up": answer["up"], "age": None if at is None else round(time.monotonic() - at, 3),
                       "error": answer["error"]},
            "services": answer["services"],
        }


class House:
    """:class:`raspy.web.app.Sources` read from a running house.

    ``board``: the shared-memory name (attached on first use, so the page
    starts before the supervisor has made it); ``restarter``: the
    supervisor's restart function, or ``None`` when there is none to ask.
    """

    def __init__(self, hostname: str, board: str, broker: str, *,
                 kv_snapshot: str = SNAPSHOT_ENDPOINT, kv_publisher: str = PUBLISHER_ENDPOINT,
                 state_dir: Path = Path("."), stale_after: float = 15.0, mmi_interval: float = 5.0,
                 history: int = 60, restarter: Callable[[str], str] | None = None) -> None:
        self.hostname = hostname
        self.board_name = board
        self.state_dir = Path(state_dir)
        self.stale_after = stale_after
        self.restarter = restarter
        self.readings = DeviceReadings(history=history)
        self.event_log = EventLog()
        self.scenario_states = ScenarioStates()
        self.host_summaries = HostSummaries()
        self.broker = broker
        self.mmi = MmiCache(broker, interval=mmi_interval)
        self._board: Board | None = None
        self._board_lock = threading.Lock()
        # one subscriber (one thread, two sockets) for the four subtrees the page shows
        self._subscriber = KvSubscriberClient("", kv_snapshot, kv_publisher, callback=self._on_kv)
        self._sinks: tuple[tuple[str, Callable[[str, bytes | None, dict[str, str]], None]], ...] = (
            (keys.DEVICE, self.readings.update),
            (keys.EVENT, self.event_log.update),
            (keys.SCENARIO, self.scenario_states.update),
            (keys.HOST, lambda key, body, _: self.host_summaries.update(key, body,
                                                                       live=self._subscriber.wait_synced(0))),
        )

    def _on_kv(self, key: str, body: bytes | None, properties: dict[str, str]) -> None:
        for subtree, update in self._sinks:
            if key.startswith(subtree):
                update(key, body, properties)
                return

    def start(self) -> "House":
        self.mmi.start()
        self._subscriber.start()
        return self

    def close(self) -> None:
        self.mmi.stop()
        self._subscriber.stop()
        if self._board is not None:
            self._board.close()

    def _attached(self) -> Board:
        with self._board_lock:
            if self._board is None:
                try:
                    self._board = Board.attach(self.board_name)
                except BoardError as exc:
                    raise Unavailable(str(exc)) from None
            return self._board

    # -- Sources --

    def executives(self) -> list[dict[str, Any]]:
        board = self._attached()
        try:
            states = board.snapshot()
        except BoardError as exc:
            raise Unavailable(str(exc)) from None
        now = time.monotonic()
        return [executive_view(state, now, self.stale_after) for state in states]

    def services(self) -> dict[str, Any]:
        return self.mmi.services()

    def devices(self) -> list[dict[str, Any]]:
        return self.readings.devices()

    def events(self) -> list[dict[str, Any]]:
        return self.event_log.events()

    def host(self) -> dict[str, Any]:
        return host_health(disk_path=self.state_dir)

    def hosts(self) -> list[dict[str, Any]]:
        return self.host_summaries.hosts()

    def restart(self, name: str) -> str:
        if name not in self._attached().names():
            raise KeyError(name)
        if self.restarter is None:
            raise Unavailable("restarting needs the supervisor, and none is reachable")
        return self.restarter(name)

    def scenarios(self) -> list[dict[str, Any]]:
        return self.scenario_states.scenarios()

    def call(self, service: str, command: str, args: Any) -> tuple[int, Any]:
        """One request, one attempt, on a socket of its own (web requests run in many threads)."""
        with MajorDomoClient(self.broker, timeout=CALL_TIMEOUT, retries=1) as client:
            try:
                return client.call(service, command, args)
            except RequestTimeout:
                raise Unavailable(f"{service} did not answer within {CALL_TIMEOUT:g} s") from None
