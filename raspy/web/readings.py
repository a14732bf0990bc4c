"""What the key/value map says about devices and events, kept in memory for the page.

Both classes are fed by a :class:`raspy.state.kv.client.KvSubscriberClient` callback
(``key, body_or_None, properties``) and read by web requests from other
threads, so each keeps its own lock. Memory is bounded: a fixed number of
recent values per device (for the sparklines), of devices, and of events.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from raspy.droplog import DropLog
from raspy.mdp import protocol as p
from raspy.state import keys
from raspy.state.history.store import number as _number

log = logging.getLogger(__name__)

#: A value is stale when older than this many poll intervals: one interval is
#: the normal age just before the next poll, the rest allows for a slow read.
STALE_FACTOR = 1.5


def _jsonable(value: Any) -> Any:
    """Msgpack values made safe for JSON: bytes become text, map keys strings."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class DeviceReadings:
    """The latest value of each device under ``/device/``, with a short history."""

    def __init__(self, history: int = 60, max_devices: int = 1000, stale_factor: float = STALE_FACTOR) -> None:
        self.history = history
        self.max_devices = max_devices
        self.stale_factor = stale_factor
        self._devices: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._dropped = DropLog(log)

    def update(self, key: str, body: bytes | None, properties: dict[str, str] | None = None) -> None:
        """Record a change of ``/device/<name>`` (``body`` ``None`` means the device is gone)."""
        name = keys.name_in(keys.DEVICE, key)
        if body is None:
            with self._lock:
                self._devices.pop(name, None)
            return
        try:
            reading = p.unpack(body)
        except p.ProtocolError as exc:
            self._dropped(f"device value {key}: {exc}")
            return
        if not isinstance(reading, dict):
            reading = {"value": reading}
        reading = _jsonable(reading)
        timestamp = reading.get("timestamp")
        interval = reading.get("poll")
        entry = {
            "value": reading.get("value"),
            "unit": str(reading.get("unit") or ""),
            "timestamp": float(timestamp) if _number(timestamp) is not None else time.time(),
            "interval": float(interval) if _number(interval) and interval > 0 else None,
            "oid": reading.get("oid") if isinstance(reading.get("oid"), str) else None,
        }
        number = _number(entry["value"])
        with self._lock:
            device = self._devices.get(name)
            if device is None:
                while len(self._devices) >= self.max_devices:
                    self._devices.popitem(last=False)
                device = self._devices[name] = {"history": deque(maxlen=self.history)}
            device.update(entry)
            if number is not None:
                device["history"].append(number)

    def devices(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every device, sorted by name: value, unit, timestamp, age, interval, stale, history."""
        now = time.time() if now is None else now
        with self._lock:
            items = [(name, dict(d, history=list(d["history"]))) for name, d in self._devices.items()]
        result = []
        for name, device in sorted(items):
            age = max(0.0, now - device["timestamp"])
            interval = device["interval"]
            result.append({
                "name": name, "value": device["value"], "unit": device["unit"],
                "timestamp": device["timestamp"], "age": round(age, 3), "interval": interval,
                "stale": interval is not None and age > interval * self.stale_factor,
                "history": device["history"], "oid": device["oid"],
            })
        return result


class EventLog:
    """The most recent changes under ``/event/``, newest first."""

    def __init__(self, size: int = 50) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def update(self, key: str, body: bytes | None, properties: dict[str, str] | None = None) -> None:
        if body is None:
            return  # an event expiring from the map is not news
        try:
            value = _jsonable(p.unpack(body))
        except p.ProtocolError:
            value = body.decode("utf-8", "replace")
        name = keys.name_in(keys.EVENT, key)
        with self._lock:
            self._events.appendleft({"name": name, "value": value, "time": time.time()})

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)


class ScenarioStates:
    """The state each scenario publishes under ``/scenario/<name>``: active, running, params."""

    def __init__(self, max_scenarios: int = 100) -> None:
        self.max_scenarios = max_scenarios
        self._scenarios: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._dropped = DropLog(log)

    def update(self, key: str, body: bytes | None, properties: dict[str, str] | None = None) -> None:
        name = keys.name_in(keys.SCENARIO, key)
        if body is None:
            with self._lock:
                self._scenarios.pop(name, None)
            return
        state = p.map_or_drop(body, self._dropped, f"scenario state {key}")
        if state is None:
            return
        params = state.get("params")
        entry = {"active": bool(state.get("active")), "running": bool(state.get("running")),
                 "params": _jsonable(params) if isinstance(params, dict) else {}}
        with self._lock:
            if name in self._scenarios or len(self._scenarios) < self.max_scenarios:
                self._scenarios[name] = entry
            else:
                self._dropped(f"scenario state {key}: more than {self.max_scenarios} scenarios")

    def scenarios(self) -> list[dict[str, Any]]:
        """Every scenario, sorted by name: name, active, running, params."""
        with self._lock:
            return [{"name": name, **entry} for name, entry in sorted(self._scenarios.items())]
