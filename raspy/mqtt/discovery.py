"""Home Assistant discovery: which component a RasPy device is, and the config that announces it.

A device's component follows its oid (``switch``, ``light.dimmer``,
``sensor.contact``, ...), which the device's ``config`` tells; without it,
the reading decides (a boolean is a binary sensor, anything else a sensor). The unit gives a
sensor its Home Assistant unit and device class where they are unambiguous.

Payloads: switches and binary sensors read ``ON``/``OFF``; a dimmer's state is
its level from 0 to 100 (0 is off); a sensor's state is its value.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from raspy import __version__
from raspy.mqtt.topics import Topics

ON, OFF = "ON", "OFF"


@dataclass(frozen=True)
class Kind:
    """A Home Assistant component, and its device class where the oid says it."""

    component: str
    device_class: str | None = None


#: oids whose component is not simply their first part.
OIDS: dict[str, Kind] = {
    "sensor.contact": Kind("binary_sensor", "opening"),
    "sensor.motion": Kind("binary_sensor", "motion"),
}
#: RasPy unit -> Home Assistant unit and device class.
UNITS: dict[str, tuple[str, str | None]] = {
    "C": ("°C", "temperature"), "°C": ("°C", "temperature"), "F": ("°F", "temperature"),
    "°F": ("°F", "temperature"), "K": ("K", "temperature"),
    "%": ("%", None), "hPa": ("hPa", "pressure"), "Pa": ("Pa", "pressure"), "mbar": ("mbar", "pressure"),
    "W": ("W", "power"), "kW": ("kW", "power"), "Wh": ("Wh", "energy"), "kWh": ("kWh", "energy"),
    "V": ("V", "voltage"), "mV": ("mV", "voltage"), "A": ("A", "current"), "lx": ("lx", "illuminance"),
    "m/s": ("m/s", "wind_speed"), "km/h": ("km/h", "wind_speed"), "kn": ("kn", "wind_speed"),
}
#: Components that take commands: their ``set`` topic is the device's ``set``.
COMMANDED = ("switch", "light")


def oid_of(config: Any) -> str | None:
    """The device's oid from the answer to its ``config`` command."""
    oid = config.get("oid") if isinstance(config, Mapping) else None
    return oid if isinstance(oid, str) else None


def classify(oid: str | None, value: Any, commands: bool) -> Kind:
    """The component of a device; a switch or dimmer that takes no commands is shown read-only."""
    kind = OIDS.get(oid or "")
    if kind is None:
        family = (oid or "").split(".")[0]
        if family in COMMANDED:
            kind = Kind(family)
        else:
            kind = Kind("binary_sensor" if isinstance(value, bool) else "sensor")
    if kind.component in COMMANDED and not commands:
        return Kind("binary_sensor" if kind.component == "switch" else "sensor")
    return kind


def state_payload(component: str | None, value: Any) -> str:
    """The state topic's payload: ``ON``/``OFF`` for on/off things, else the value as text."""
    if component in ("switch", "binary_sensor") or (component is None and isinstance(value, bool)):
        return ON if is_on(value) else OFF
    if component == "light" and isinstance(value, bool):
        return "100" if value else "0"
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "None"  # Home Assistant's "unknown"
    return json.dumps(value, separators=(",", ":"))


def is_on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("on", "true", "1", "open")
    return bool(value)


def command_value(component: str, text: str) -> Any:
    """What a ``set`` payload asks the device for: true/false for ON/OFF, else a number or JSON, else the text."""
    word = text.strip()
    if word.upper() in (ON, OFF):
        on = word.upper() == ON
        return (100 if on else 0) if component == "light" else on
    try:
        return json.loads(word)
    except ValueError:
        return word


def attributes_payload(reading: Mapping[str, Any]) -> str:
    """``{value, unit, timestamp}`` as JSON, for the attributes topic."""
    body = {key: reading.get(key) for key in ("value", "unit", "timestamp")}
    return json.dumps(body, separators=(",", ":"), default=str)


def config_payload(topics: Topics, availability: str, host: str, device: str, kind: Kind, unit: str | None,
                   value: Any) -> dict:
    """The discovery config of one device (Home Assistant's MQTT discovery schema).

    ``availability`` is the bridge's status topic: the device is there while the bridge is.
    """
    state, command = topics.state(host, device), topics.command(host, device)
    config: dict[str, Any] = {
        "name": device,
        "unique_id": f"raspy_{host}_{device}",
        "state_topic": state,
        "json_attributes_topic": topics.attributes(host, device),
        "availability_topic": availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {"identifiers": [f"raspy_{host}"], "name": f"RasPy {host}", "manufacturer": "RasPy",
                   "model": "RasPy house", "sw_version": __version__},
        "origin": {"name": "RasPy", "sw_version": __version__},
    }
    if kind.component == "sensor":
        config.update(_sensor(unit, value))
    elif kind.component == "binary_sensor":
        config.update(payload_on=ON, payload_off=OFF)
    elif kind.component == "switch":
        config.update(command_topic=command, payload_on=ON, payload_off=OFF)
    elif kind.component == "light":
        config.update(command_topic=command, payload_on=ON, payload_off=OFF, on_command_type="brightness",
                      brightness_command_topic=command, brightness_state_topic=state, brightness_scale=100,
                      state_value_template="{{ 'ON' if value | float(0) > 0 else 'OFF' }}")
    if kind.device_class:
        config["device_class"] = kind.device_class
    return config


def _sensor(unit: str | None, value: Any) -> dict[str, Any]:
    """Unit, device class and state class of a numeric sensor; nothing for other values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {}
    fields: dict[str, Any] = {}
    if unit:
        shown, device_class = UNITS.get(unit, (unit, None))
        fields["unit_of_measurement"] = shown
        if device_class:
            fields["device_class"] = device_class
    fields["state_class"] = "total_increasing" if fields.get("device_class") == "energy" else "measurement"
    return fields
