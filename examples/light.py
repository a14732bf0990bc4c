"""Dimmable lights: a RasPy device class, and the device server that hosts it.

The example of docs/write-a-device.md; tests/test_examples.py runs it, so the
guide and this file cannot drift apart. Run it as the executive ``lights``::

    [executives.lights]
    kind = "light:LightServer"       # this file must be importable: PYTHONPATH=examples
    lights = [{name = "kitchen", pin = 18, poll = 60}, {name = "porch"}]

    $ raspy call pi.lights.devices set '["kitchen", 40]'
    $ raspy kv watch /device/pi.lights.

The level lives in the device's configuration and nowhere else, so ``config``,
``get`` and what is published always agree. A real light would also write the
level to its PWM pin in :meth:`DimmableLight.set`; this one only remembers it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

from raspy.devices import BaseDevice, DeviceError, DeviceRegister, Reading
from raspy.devices.base import NOT_POLLED, freeze
from raspy.devices.service import DeviceService, name_and_value, name_arg, reading_result, refusals
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.options import Option
from raspy.mdp.service import bad_request


def check_level(value: Any) -> int:
    """A level is an integer percentage; a bool is refused although Python counts it as an int."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise DeviceError(f"level must be an integer from 0 to 100, got {value!r}")
    return value


class DimmableLight(BaseDevice):
    """A light dimmed from 0 (off) to 100 %, on a PWM pin of the Pi."""

    oid = "light.dimmer"
    pollable = True  # its level is published every `poll` seconds (0: only when it changes)
    # Every key a configuration may leave out, with its default. Read-only: no instance changes it.
    template = freeze({"poll": NOT_POLLED, "unit": "%", "level": 0, "pin": None})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        """Refuse, with the reason, a configuration this light cannot work with.

        Called on the whole configuration at creation and at every change, before anything is
        applied: a refused ``config`` leaves the device as it was.
        """
        super().check(json)  # name, oid and poll
        check_level(json.get("level"))
        pin = json.get("pin")
        if pin is not None and (isinstance(pin, bool) or not isinstance(pin, int)
                                or not 0 <= pin <= 27):
            raise DeviceError(f"pin must be a GPIO number from 0 to 27, got {pin!r}")

    def check_reading(self, value: Any) -> None:
        check_level(value)

    def set(self, level: Any, now: float) -> Reading:
        """Dim to ``level``, through ``config``: the usual check, merge and log line."""
        self.config({"name": self.name, "level": level})
        return self.read(now)

    def read(self, now: float) -> Reading:
        """Record the current level as the latest reading."""
        return self.record(self.config()["level"], now)


#: The classes this server builds, by oid: a table may name another registered class with "oid".
REGISTER = DeviceRegister([DimmableLight])


class Lights(DeviceService):
    """The lights of one server. ``list_keys``, ``config``, ``poll``, ``log`` and ``reset`` are
    inherited; ``get NAME`` and ``set [NAME, LEVEL]`` are this class's."""

    def __init__(self, tables: Iterable[Mapping[str, Any]] = (),
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        for table in tables:
            self.add(table)

    def add(self, table: Any) -> BaseDevice:
        """A device from its configuration table; a bad table or a taken name raises DeviceError."""
        if not isinstance(table, Mapping):
            raise DeviceError(f"a light is a table with a 'name', got {table!r}")
        device = REGISTER.new({"oid": DimmableLight.oid, **table})
        if device.name in self.devices:
            raise DeviceError(f"two lights are called {device.name!r}")
        self.devices[device.name] = device
        return device

    def do_get(self, args: Any) -> dict[str, Any]:
        now = self.clock()
        return reading_result(self.device(name_arg(args)).read(now), now)

    def do_set(self, args: Any) -> dict[str, Any]:
        name, level = name_and_value(args)
        light = self.device(name)  # 404 for an unknown light
        if level is None:
            raise bad_request("set needs [name, level]")
        now = self.clock()
        with refusals():  # a DeviceError is a 400 with its reason
            reading = light.set(level, now)
        self.changed(name)  # published at the server's next look, not at the next poll
        return reading_result(reading, now)


def check_lights(tables: list[Any]) -> None:
    """Build the lights once when the configuration is read: a bad table stops start-up, naming it."""
    lights = Lights()
    for index, table in enumerate(tables):
        try:
            lights.add(table)
        except DeviceError as exc:
            raise exc.inside(index) from None  # where: lights[index], so the error shows its line


class LightServer(DeviceServer):
    """The executive: serves ``<host>.<name>.devices`` and publishes readings to ``/device/``."""

    options = (Option("lights", list, [], "one table per light: `name`, `pin`, `poll`, `level`", check_lights),)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, Lights(settings.options.get("lights", [])), slot)
