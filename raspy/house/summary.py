"""A host's summary on the key/value map, ``/host/<hostname>``: what the page for the house lists.

Each supervisor publishes one msgpack map of its board (:func:`build`): its executives with their
states, restarts and last exits, this machine's health (load, CPU temperature when the kernel has a
thermal zone, free bytes of the state directory's disk), the wall time and a sequence number.
:class:`SummaryPublisher` sends it at once when an executive changes state (at most every
``host_interval`` seconds) and otherwise only every ``host_refresh`` seconds: an idle house sends
one small update per refresh, and a reader tells a host that fell silent (no summary for
:data:`SILENT_REFRESHES` of its refreshes) from one where nothing changed. See docs/hosts.md.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import zmq

from raspy.droplog import DropLog
from raspy.errors import RequestTimeout
from raspy.house.board import Board, BoardError, SlotState
from raspy.house.control import duration
from raspy.house.health import THROTTLED_BITS, host_health, size
from raspy.mdp import protocol as p
from raspy.state.keys import HOST
from raspy.state.kv.client import KvPublisherClient

if TYPE_CHECKING:
    from raspy.house.config import Config
    from raspy.house.process import ExecutiveProcess

log = logging.getLogger(__name__)

#: A host is silent when its last summary is older than this many of its own refreshes.
SILENT_REFRESHES = 3
#: Executives a reader takes from one summary (a board has far fewer).
MAX_EXECUTIVES = 64
#: Characters a reader keeps of a name, a state or a reason.
MAX_TEXT = 200


def build(hostname: str, states: Iterable[SlotState], state_dir: Path, *, started: float, sequence: int,
          refresh: float, now: float | None = None) -> dict[str, Any]:
    """The summary of a board: what ``/host/<hostname>`` holds."""
    return {
        "host": hostname,
        "time": time.time() if now is None else now,
        "started": started,
        "sequence": sequence,
        "refresh": refresh,
        "executives": [{
            "name": state.name,
            "state": str(state.state),
            "restarts": state.restarts,
            "last_exit": ({"code": state.last_exit.code, "reason": state.last_exit.reason, "at": state.last_exit.at}
                          if state.last_exit else None),
        } for state in states],
        "health": host_health(disk_path=state_dir),
    }


class SummaryPublisher:
    """Publishes the supervisor's summary from its loop: :meth:`tick` when awake, woken by :attr:`due`.

    Sends never wait: a hub that is away costs a failed attempt, tried again after ``host_interval``
    seconds, doubling up to ``host_refresh``. Its own ZeroMQ context (a CURVE client with this
    host's keys in a CURVE house) keeps the executives' contexts, made after the fork, apart.
    """

    def __init__(self, config: Config, board: Board) -> None:
        self.hostname, self.state_dir, self.board = config.hostname, config.state_dir, board
        self.interval, self.refresh = config.host_interval, config.host_refresh
        self.started = time.time()
        self.sequence = 0
        self.sent = 0
        # the first one an interval after the start: kv binds, the connection is made meanwhile
        self._last = time.monotonic()      # of the last attempt
        self.due = self._last + self.interval  # of the next one
        self._retry = self.interval
        self._seen: tuple | None = None    # the executives' states at the last look
        self._context = zmq.Context()
        if config.security is not None:
            config.security.client(self._context)
        self._client = KvPublisherClient(config.kv_collector, timeout=0, context=self._context)
        self._drop = DropLog(log)

    def tick(self, now: float, processes: Mapping[str, ExecutiveProcess]) -> None:
        """Publish when due; a change of an executive's state or start count makes it due (rate-bound)."""
        seen = tuple((name, proc.state, proc.starts) for name, proc in processes.items())
        if seen != self._seen:
            self._seen = seen
            self.due = min(self.due, max(now, self._last + self.interval))
        if now >= self.due:
            self._send(now)

    def _send(self, now: float) -> None:
        self._last = now
        try:
            self.sequence += 1
            summary = build(self.hostname, self.board.snapshot(), self.state_dir, started=self.started,
                            sequence=self.sequence, refresh=self.refresh)
            self._client.send(HOST, self.hostname, p.pack(summary))
        except (BoardError, RequestTimeout, ValueError) as exc:
            self._drop.log(logging.WARNING, "summary %s%s not published (%s); next try in %gs", HOST, self.hostname,
                           exc, self._retry)
            self.due = now + self._retry
            self._retry = min(self._retry * 2, self.refresh)
            return
        self.sent += 1
        self.due = now + self.refresh
        self._retry = self.interval

    def close(self) -> None:
        self._client.close()
        self._context.destroy(linger=0)


# -- reading ---------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise p.ProtocolError(f"{value!r:.60} is not text")
    return value[:MAX_TEXT]


def _health(value: Any) -> dict[str, Any]:
    """What of a summary's ``health`` has the shape :func:`host_health` gives; the rest is left out."""
    if not isinstance(value, dict):
        return {}
    health: dict[str, Any] = {}
    if _finite(value.get("cpu_temperature")):
        health["cpu_temperature"] = float(value["cpu_temperature"])
    load = value.get("load")
    if isinstance(load, list) and load and len(load) <= 3 and all(map(_finite, load)):
        health["load"] = [float(x) for x in load]
    disk = value.get("disk")
    if isinstance(disk, dict) and all(isinstance(disk.get(k), int) and disk[k] >= 0 for k in ("free_bytes", "total_bytes")):
        health["disk"] = {"free_bytes": disk["free_bytes"], "total_bytes": disk["total_bytes"]}
    throttled = value.get("throttled")
    if isinstance(throttled, dict) and all(isinstance(throttled.get(flag), bool) for flag in THROTTLED_BITS.values()):
        health["throttled"] = {"raw": str(throttled.get("raw", ""))[:20],
                               **{flag: throttled[flag] for flag in THROTTLED_BITS.values()}}
    if isinstance(value.get("under_voltage"), bool):
        health["under_voltage"] = value["under_voltage"]
    return health


def _executive(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("restarts"), int):
        raise p.ProtocolError("an executive is {name, state, restarts, last_exit}")
    last = value.get("last_exit")
    if last is not None and not (isinstance(last, dict) and isinstance(last.get("code"), int)
                                 and isinstance(last.get("reason"), str) and _finite(last.get("at"))):
        raise p.ProtocolError("a last exit is {code, reason, at}")
    return {"name": _text(value.get("name")), "state": _text(value.get("state")), "restarts": value["restarts"],
            "last_exit": None if last is None else {"code": last["code"], "reason": _text(last["reason"]),
                                                    "at": float(last["at"])}}


def read(body: bytes) -> dict[str, Any]:
    """A published summary, checked and cut to its bounds; :class:`~raspy.mdp.protocol.ProtocolError`
    says what is wrong (a reader drops that one and keeps the last good one)."""
    summary = p.unpack_map(body)
    when, refresh, sequence = summary.get("time"), summary.get("refresh"), summary.get("sequence")
    started, executives = summary.get("started", 0.0), summary.get("executives")
    if not (_finite(when) and _finite(refresh) and refresh > 0 and isinstance(sequence, int) and _finite(started)
            and isinstance(executives, list)):
        raise p.ProtocolError("a host summary is {host, time, started, sequence, refresh > 0, executives, health}")
    return {"host": _text(summary.get("host")), "time": float(when), "started": float(started),
            "sequence": sequence, "refresh": float(refresh),
            "executives": [_executive(ex) for ex in executives[:MAX_EXECUTIVES]],
            "health": _health(summary.get("health"))}


def is_silent(age: float, refresh: float) -> bool:
    """Whether a host last heard of ``age`` seconds ago, refreshing every ``refresh`` seconds, went silent."""
    return age > SILENT_REFRESHES * refresh


# -- raspy status --house --------------------------------------------------------------------


def _health_text(health: dict[str, Any]) -> str:
    parts = []
    if "load" in health:
        parts.append(f"load {health['load'][0]:.2f}")
    if "cpu_temperature" in health:
        parts.append(f"CPU {health['cpu_temperature']:.1f} °C")
    if "disk" in health:
        parts.append(f"{size(health['disk']['free_bytes'])} free")
    return ", ".join(parts)


def house_report(bodies: Mapping[str, bytes], now: float | None = None) -> tuple[list[str], int]:
    """The lines of ``raspy status --house`` from the map's ``/host/*`` bodies, and its exit status:
    0 every host fresh and every executive running, 1 otherwise (or no summary at all).

    The age is the reader's clock against the host's: hosts' clocks are assumed to agree (NTP).
    """
    now = time.time() if now is None else now
    lines, code = [], 0
    for key, body in sorted(bodies.items()):
        try:
            summary = read(body)
        except p.ProtocolError as exc:
            lines.append(f"{key[len(HOST):]}: unreadable summary ({exc})")
            code = 1
            continue
        age = max(0.0, now - summary["time"])
        silent = is_silent(age, summary["refresh"])
        seen = time.strftime("%H:%M:%S", time.localtime(summary["time"]))
        state = f"SILENT since {seen} ({duration(age)} ago)" if silent else f"fresh, seen {duration(age)} ago"
        health = _health_text(summary["health"])
        lines.append(f"{key[len(HOST):]}: {state}" + (f"; {health}" if health else ""))
        for ex in summary["executives"]:
            last = f"  last exit: {ex['last_exit']['reason']}" if ex["last_exit"] and ex["last_exit"]["reason"] else ""
            lines.append(f"  {ex['name']:<12} {ex['state']:<9} restarts {ex['restarts']}{last}")
            code = code or int(ex["state"] != "running")
        code = code or int(silent)
    if not lines:
        return [f"no host has published a summary under {HOST} yet"], 1
    return lines, code
