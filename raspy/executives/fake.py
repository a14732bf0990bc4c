"""``<host>.fake.devices``: simulated sensors and switches, for a house without hardware.

Commands and their args (besides those of :mod:`raspy.devices.service`):

- ``get``: ``name``; result: ``{"value", "unit", "timestamp", "age"}`` computed now.
- ``add``: a config table ``{"name": ..., "kind": "cyclic"|"linear"|"switch", ...}``; result: the name.
- ``remove``: ``name``; result: none.
- ``set``: ``[name, value]`` for switches (true/false, "on"/"off", 1/0); result: the reading.

``due(now)`` gives the readings a publisher should send now, by each device's poll interval.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

from raspy.devices import DeviceError, Reading
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
        self._published: dict[str, float] = {}
        for config in configs:
            self.add(config)

    def add(self, config: Any) -> SimulatedDevice:
        """Add a device from its config table; a bad table or a taken name raises DeviceError."""
        device = simulated(config)
        if device.name in self.devices:
            raise DeviceError(f"device {device.name!r} exists; remove it first")
        self.devices[device.name] = device
        return device

    def due(self, now: float) -> list[tuple[str, Reading]]:
        """Readings of the polled devices whose interval has passed since they were last published."""
        out = []
        for name, device in sorted(self.devices.items()):
            interval = device.poll()
            last = self._published.get(name)
            if interval > 0 and (last is None or now - last >= interval):
                self._published[name] = now
                out.append((name, device.read(now)))
        return out

    def next_due(self, now: float) -> float | None:
        """The earliest time a polled device is due; a device never published is due now."""
        times = [self._published[name] + device.poll() if name in self._published else now
                 for name, device in self.devices.items() if device.poll() > 0]
        return min(times, default=None)

    def do_get(self, args: Any) -> dict[str, Any]:
        now = self.clock()
        return reading_result(self.device(name_arg(args)).read(now), now)

    def do_add(self, args: Any) -> str:
        with refusals():
            return self.add(args).name

    def do_remove(self, args: Any) -> None:
        name = self.device(name_arg(args)).name
        del self.devices[name]
        self._published.pop(name, None)

    def do_set(self, args: Any) -> dict[str, Any]:
        name, value = name_and_value(args)
        device = self.device(name)
        if not isinstance(device, Switch):
            raise bad_request(f"{name!r} is a {device.kind} sensor; only switches can be set")
        now = self.clock()
        with refusals():
            device.set(value)
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
