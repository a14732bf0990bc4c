"""Sensors: devices that can be polled and whose readings are numbers (or a wind vector)."""
from __future__ import annotations

import math
from typing import Any, Mapping

from raspy.devices.base import NOT_POLLED, BaseDevice, DeviceError, freeze


def check_number(what: str, value: Any, key: str | None = None) -> float:
    """``value`` as a finite real number, or a :class:`DeviceError` that names ``what`` (at ``key``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DeviceError(f"{what} must be a finite number, got {value!r}", *([key] if key else []))
    return value


class SensorDevice(BaseDevice):
    """A sensor: pollable, reads a number in its ``unit``."""

    oid = "sensor"
    pollable = True
    template = freeze({"poll": NOT_POLLED, "unit": None})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        unit = json.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise DeviceError(f"unit must be a string, got {unit!r}", "unit")

    def check_reading(self, value: Any) -> None:
        check_number(f"a reading of {self.name}", value)


class SensorTemperature(SensorDevice):
    """A thermometer, in degrees Celsius or Fahrenheit."""

    oid = "sensor.temperature"
    units = ("C", "F")
    template = freeze({**SensorDevice.template, "unit": "C"})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        if json.get("unit") not in cls.units:
            raise DeviceError(f"temperature unit must be one of {list(cls.units)}, got {json.get('unit')!r}", "unit")


class SensorWind(SensorDevice):
    """A wind gauge: readings are ``{"speed": >= 0, "direction": 0-360 degrees}``."""

    oid = "sensor.wind"
    units = ("m/s", "km/h", "kn")
    template = freeze({**SensorDevice.template, "unit": "m/s"})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        if json.get("unit") not in cls.units:
            raise DeviceError(f"wind speed unit must be one of {list(cls.units)}, got {json.get('unit')!r}", "unit")

    def check_reading(self, value: Any) -> None:
        if not isinstance(value, Mapping) or set(value) != {"speed", "direction"}:
            raise DeviceError(f"a wind reading is {{'speed': ..., 'direction': ...}}, got {value!r}")
        if check_number("wind speed", value["speed"]) < 0:
            raise DeviceError(f"wind speed cannot be negative, got {value['speed']!r}")
        if not 0 <= check_number("wind direction", value["direction"]) <= 360:
            raise DeviceError(f"wind direction is 0-360 degrees, got {value['direction']!r}")
