"""Simulated devices for the fake server: deterministic functions of the time they are given.

Nothing here reads a clock; the caller passes ``now`` (Unix seconds), so tests
drive time. Each kind is configured by a TOML table such as
``{name="aquarium", kind="cyclic", cycle=86400, min=24, max=27, unit="C", poll=10}``.

- ``cyclic``: a raised cosine over ``cycle`` seconds, ``min`` at the start of each
  cycle (times ``offset + k * cycle``), ``max`` at half the cycle, ``min`` again at its end.
- ``linear``: ``start + slope * hours since the first reading``, clamped to
  ``[lower, upper]`` where given.
- ``switch``: an on/off actuator for scenarios; its reading is its state.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from raspy.devices.base import NOT_POLLED, BaseDevice, DeviceError, freeze, from_table
from raspy.devices.sensor import SensorDevice, check_number


class SimulatedDevice(BaseDevice):
    """A device whose reading is computed from the time; ``kind`` names it in configs.

    Its keys are those of its template, ``name`` and ``oid``: any other is refused, since a
    misspelt ``cyle`` would otherwise be kept as an extra key while the cycle stays the default.
    """

    kind: ClassVar[str] = ""
    pollable = True

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        if json.get("kind") != cls.kind:
            raise DeviceError(f"kind {json.get('kind')!r} does not match {cls.__name__} ({cls.kind!r})", "kind")
        known = ["name", *cls.template, "oid"]
        for key in json:
            if key not in known:
                raise DeviceError(f"unknown key {key!r}; known: {', '.join(known)}", key)

    def value(self, now: float) -> Any:
        """The reading at time ``now``."""
        raise NotImplementedError

    def read(self, now: float):
        """Compute and record the reading at ``now``."""
        return self.record(self.value(now), now)


class CyclicSensor(SimulatedDevice, SensorDevice):
    """A value that follows a daily (or any) cycle, e.g. an aquarium's temperature."""

    oid = "sensor.cyclic"
    kind = "cyclic"
    template = freeze({"kind": kind, "poll": NOT_POLLED, "unit": None, "cycle": 86400, "min": 0, "max": 1, "offset": 0})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        if check_number("cycle", json.get("cycle"), "cycle") <= 0:
            raise DeviceError(f"cycle must be a positive number of seconds, got {json['cycle']!r}", "cycle")
        low, high = check_number("min", json.get("min"), "min"), check_number("max", json.get("max"), "max")
        if low > high:
            raise DeviceError(f"min ({low}) is above max ({high})", "min")
        check_number("offset", json.get("offset"), "offset")

    def value(self, now: float) -> float:
        cfg = self._config
        phase = ((now - cfg["offset"]) % cfg["cycle"]) / cfg["cycle"]
        weight = (1 + math.cos(2 * math.pi * phase)) / 2  # 1 at the start and end, 0 at half
        # Weighted sum rather than min + (max - min) * x, so min and max come out exact.
        return cfg["min"] * weight + cfg["max"] * (1 - weight)


class LinearSensor(SimulatedDevice, SensorDevice):
    """A value that drifts at a constant rate from the first reading, within optional bounds."""

    oid = "sensor.linear"
    kind = "linear"
    template = freeze({"kind": kind, "poll": NOT_POLLED, "unit": None, "start": 0, "slope": 0,
                       "lower": None, "upper": None})

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._origin: float | None = None

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        check_number("start", json.get("start"), "start")
        check_number("slope (per hour)", json.get("slope"), "slope")
        bounds = [check_number(key, json[key], key) for key in ("lower", "upper") if json.get(key) is not None]
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise DeviceError(f"lower ({bounds[0]}) is above upper ({bounds[1]})", "lower")

    def value(self, now: float) -> float:
        if self._origin is None:
            self._origin = now
        cfg = self._config
        value = cfg["start"] + cfg["slope"] * (now - self._origin) / 3600
        if cfg["lower"] is not None:
            value = max(value, cfg["lower"])
        if cfg["upper"] is not None:
            value = min(value, cfg["upper"])
        return value

    def reset(self) -> dict[str, Any]:
        """Back to the template; the next reading starts the line again."""
        self._origin = None
        return super().reset()


def switch_state(value: Any) -> bool:
    """``True``/``False`` for true/false, "on"/"off" (any case), 1/0; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    raise DeviceError(f"a switch is set to true/false, 'on'/'off' or 1/0, got {value!r}")


class Switch(SimulatedDevice):
    """An on/off actuator; its state is part of its configuration."""

    oid = "switch"
    kind = "switch"
    template = freeze({"kind": kind, "poll": NOT_POLLED, "state": False})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        try:
            switch_state(json.get("state"))
        except DeviceError as exc:
            raise exc.inside("state") from None

    def _apply(self, full: Mapping[str, Any]) -> None:
        super()._apply({**full, "state": switch_state(full["state"])})

    def set(self, value: Any) -> bool:
        """Turn the switch on or off."""
        self._config["state"] = switch_state(value)
        self.note(f"set {'on' if self._config['state'] else 'off'}")
        return self._config["state"]

    def value(self, now: float) -> bool:
        return self._config["state"]

    def check_reading(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise DeviceError(f"a switch reads true or false, got {value!r}")


#: Simulated classes by the ``kind`` of their config table.
KINDS: dict[str, type[SimulatedDevice]] = {cls.kind: cls for cls in (CyclicSensor, LinearSensor, Switch)}


def simulated(config: Any) -> SimulatedDevice:
    """A simulated device from its config table; ``kind`` picks the class."""
    return from_table(KINDS, config, "a simulated device")
