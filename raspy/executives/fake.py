"""``<host>.fake.devices``: simulated sensors and switches, for a house without hardware.

Commands and their args (besides those of :mod:`raspy.devices.service`):

- ``get``: ``name``; result: ``{"value", "unit", "timestamp", "age"}`` computed now.
- ``add``: a config table ``{"name": ..., "kind": "cyclic"|"linear"|"switch", ...}``; result: the name.
- ``remove``: ``name``; result: none.
- ``set``: ``[name, value]`` for switches (true/false, "on"/"off", 1/0); result: the reading.

A command that changes a switch (``set``, its ``config`` or ``reset``) makes it due at once
(see :meth:`raspy.devices.service.DeviceService.due`).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

from raspy.devices import DeviceError
from raspy.devices.service import DeviceService, name_and_value, name_arg, reading_result, refusals
from raspy.devices.simulated import SimulatedDevice, Switch, simulated
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.options import Option, with_defaults
from raspy.mdp.service import bad_request


class FakeDevices(DeviceService):
    """The simulated devices of one fake server."""

    def __init__(self, configs: Iterable[Mapping[str, Any]] = (), clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        for config in configs:
            self.add(config)

    def add(self, config: Any) -> SimulatedDevice:
        """Add a device from its config table; a bad table or a taken name raises DeviceError."""
        device = simulated(config)
        if device.name in self.devices:
            raise DeviceError(f"device {device.name!r} exists; remove it first")
        self.devices[device.name] = device
        return device

    def do_get(self, args: Any) -> dict[str, Any]:
        now = self.clock()
        return reading_result(self.device(name_arg(args)).read(now), now)

    def do_add(self, args: Any) -> str:
        with refusals():
            return self.add(args).name

    def do_remove(self, args: Any) -> None:
        self.remove(self.device(name_arg(args)).name)

    def do_config(self, args: Any) -> Mapping[str, Any]:
        config = super().do_config(args)
        if isinstance(self.devices.get(config["name"]), Switch) and args[1:]:
            self.changed(config["name"])
        return config

    def do_reset(self, args: Any) -> Mapping[str, Any]:
        config = super().do_reset(args)
        if isinstance(self.devices.get(config["name"]), Switch):
            self.changed(config["name"])
        return config

    def do_set(self, args: Any) -> dict[str, Any]:
        name, value = name_and_value(args)
        device = self.device(name)
        if not isinstance(device, Switch):
            raise bad_request(f"{name!r} is a {device.kind} sensor; only switches can be set")
        now = self.clock()
        with refusals():
            device.set(value)
        self.changed(name)
        return reading_result(device.read(now), now)


def check_devices(tables: list[Any]) -> None:
    """Each table makes a simulated device, and no two share a name; a refusal names the entry and key."""
    names: dict[str, int] = {}
    for index, table in enumerate(tables):
        try:
            device = simulated(table)
        except DeviceError as exc:
            raise exc.inside(index) from None
        if device.name in names:
            raise DeviceError(f"devices[{names[device.name]}] has the name {device.name!r} too", index, "name")
        names[device.name] = index


class Fake(DeviceServer):
    """The ``fake`` executive: the simulated devices of option ``devices``."""

    options = (
        Option("devices", list, [], "simulated devices, one table each (kinds and keys below)", check_devices),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, FakeDevices(with_defaults(self.options, settings.options)["devices"]), slot)
