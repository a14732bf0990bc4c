"""Devices brought in from MQTT by import rules, and their service ``<host>.<executive>.devices``.

Commands besides those of :mod:`raspy.devices.service`:

- ``get``: ``name``; result: ``{"value", "unit", "timestamp", "age"}`` of the last message.
- ``set``: ``[name, value]`` for a device whose rule has a ``command_topic``; the value is
  published there and the result is ``{"topic", "payload"}``. The device's reading changes
  when the device itself reports its new state. ``400`` for a device without a command
  topic, ``500`` while the MQTT broker is away.

``due(now)`` gives the readings received since the last call, the latest per device.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

from raspy.devices import BaseDevice, DeviceError, Reading
from raspy.devices.base import NOT_POLLABLE, freeze
from raspy.devices.service import DeviceService, name_and_value, name_arg, reading_result
from raspy.mdp import protocol
from raspy.mdp.service import ServiceError, bad_request
from raspy.mqtt.imports import ImportRule
from raspy.mqtt.imports import Reading as Found

#: ``send(topic, payload)`` publishes a command, or raises RuntimeError when it cannot now.
Sender = Callable[[str, bytes], None]


class ImportedDevice(BaseDevice):
    """A device fed by MQTT messages: never polled, any JSON-like reading."""

    oid = "mqtt"
    template = freeze({"poll": NOT_POLLABLE, "topic": None, "field": None, "unit": None, "command_topic": None})

    def __init__(self, config: Mapping[str, Any], rule: ImportRule) -> None:
        super().__init__(config)
        self.rule = rule
        self._origin = {key: self._config[key] for key in ("topic", "field", "unit", "command_topic")}

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        for key in ("unit", "command_topic"):
            value = json.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise DeviceError(f"{key} must be a non-empty string or absent, got {value!r}")
        command = json.get("command_topic")
        if command is not None and ("+" in command or "#" in command):
            raise DeviceError(f"command_topic {command!r} may not hold wildcards")

    def reset(self) -> dict[str, Any]:
        """Back to how the import rule made it (extra keys go)."""
        self._apply({**dict(self.template), **self._origin, "name": self.name})
        self.note("reset to its import")
        return self.config()


class ImportedDevices(DeviceService):
    """The devices of the import rules, at most ``limit`` of them."""

    def __init__(self, limit: int, send: Sender, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.limit = limit
        self.send = send
        self.clock = clock
        self._pending: dict[str, Reading] = {}

    def take(self, rule: ImportRule, topic: str, found: Found, now: float) -> None:
        """Record one reading of a message; DeviceError when a new device finds no room."""
        device = self.devices.get(found.name)
        if device is None:
            if len(self.devices) >= self.limit:
                raise DeviceError(f"{found.name} not imported: max_imported ({self.limit}) devices exist")
            device = self.devices[found.name] = ImportedDevice(
                {"name": found.name, "topic": topic, "field": found.field, "unit": found.unit,
                 "command_topic": found.command_topic}, rule)
        self._pending[found.name] = device.record(found.value, now)

    def due(self, now: float) -> list[tuple[str, Reading]]:
        """The readings received since the last call, the latest per device."""
        due, self._pending = sorted(self._pending.items()), {}
        return due

    def next_due(self, now: float) -> float | None:
        """Now when a reading waits; else nothing until the next message wakes the publisher."""
        return now if self._pending else math.inf

    def do_get(self, args: Any) -> dict[str, Any]:
        device = self.device(name_arg(args))
        return reading_result(device.reading, self.clock())

    def do_set(self, args: Any) -> dict[str, str]:
        name, value = name_and_value(args)
        device = self.device(name)
        config = device.config()
        if not config["command_topic"]:
            raise bad_request(f"{name!r} takes no commands: its import rule has no command_topic")
        payload = device.rule.command_payload(config["field"], value)
        try:
            self.send(config["command_topic"], payload.encode())
        except RuntimeError as exc:
            raise ServiceError(protocol.ERROR, str(exc)) from None
        device.note(f"set {value!r}: sent {payload!r} to {config['command_topic']}")
        return {"topic": config["command_topic"], "payload": payload}
