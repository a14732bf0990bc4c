"""``<host>.gpio.devices``: relays, dimmers, buttons, contacts and motion sensors on the Pi's pins.

The pins are driven through gpiozero 2, whose pin factory is lgpio on current
Raspberry Pi OS and on the Pi 5 (``pip install "raspy[pi]"`` or the
``python3-lgpio`` package); ``GPIOZERO_PIN_FACTORY`` picks another, ``mock``
for tests. Commands besides those of :mod:`raspy.devices.service`:

- ``get``: ``name``; result: ``{"value", "unit", "timestamp", "age"}``, the value read from the pin now.
- ``set``: ``[name, value]`` for outputs (a switch: true/false, "on"/"off", 1/0; a dimmer: 0-100);
  result: the reading the pin gives back afterwards.

Inputs are published at the edge, from gpiozero's callbacks; outputs when set; every device
once at start and then every ``poll`` seconds if it has one. On stop, outputs go to their
``on_stop`` level and stay driven (see docs/devices.md for what the kernel does after that).
"""
from __future__ import annotations

import atexit
import logging
import time
from typing import Any, Callable, Iterable

import gpiozero
import gpiozero.devices

from raspy.devices import DeviceError, Reading
from raspy.devices.gpio import GpioDevice, GpioDimmer, GpioInput, GpioOutput, GpioSwitch, gpio_device
from raspy.devices.service import DeviceService, name_and_value, name_arg, reading_result, refusals
from raspy.droplog import DropLog
from raspy.errors import RaspyError, RequestTimeout
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.options import Option, with_defaults
from raspy.mdp.protocol import Frames
from raspy.mdp.service import bad_request
from raspy.state import keys

log = logging.getLogger(__name__)

class GpioError(RaspyError):
    """A pin cannot be opened: no pin factory, a pin another program holds, a pin the board lacks."""


class GpioDevices(DeviceService):
    """The devices of one ``gpio`` executive; a pin serves one device."""

    def __init__(self, tables: Iterable[Any] = (), clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self._pins: dict[int, str] = {}
        for table in tables:
            self.add(table)

    def add(self, table: Any) -> GpioDevice:
        """A device from its table; a bad table, a taken name or a taken pin raises DeviceError."""
        device = gpio_device(table)
        pin = device.config()["pin"]
        if device.name in self.devices:
            raise DeviceError(f"two devices are called {device.name!r}", "name")
        if pin in self._pins:
            raise DeviceError(f"GPIO{pin} is used twice: by {self._pins[pin]!r} and {device.name!r}", "pin")
        self.devices[device.name] = device
        self._pins[pin] = device.name
        return device

    def outputs(self) -> list[GpioOutput]:
        return [device for device in self.devices.values() if isinstance(device, GpioOutput)]

    def inputs(self) -> list[GpioInput]:
        return [device for device in self.devices.values() if isinstance(device, GpioInput)]

    def edge(self, name: str, active: bool, now: float) -> Reading:
        """An input changed: record the level the edge brought, to publish at once."""
        return self.published(name, self.devices[name].record(active, now))

    def do_get(self, args: Any) -> dict[str, Any]:
        now = self.clock()
        return reading_result(self.device(name_arg(args)).read(now), now)

    def do_set(self, args: Any) -> dict[str, Any]:
        name, value = name_and_value(args)
        device = self.device(name)
        if not isinstance(device, GpioOutput):
            raise bad_request(f"{name!r} is an input ({device.oid}); only relays, switches and dimmers can be set")
        if value is None:
            raise bad_request("set needs [name, value]")
        with refusals():
            device.set(value)
        self.changed(name)
        now = self.clock()
        return reading_result(device.read(now), now)


def open_line(device: GpioDevice) -> gpiozero.Device:
    """The gpiozero device for ``device``'s pin; outputs start at their ``initial`` level."""
    config = device.config()
    pin = config["pin"]
    if isinstance(device, GpioSwitch):
        return gpiozero.DigitalOutputDevice(pin, active_high=config["active_high"],
                                            initial_value=bool(device.level("initial")))
    if isinstance(device, GpioDimmer):
        return gpiozero.PWMOutputDevice(pin, active_high=config["active_high"],
                                        initial_value=device.level("initial"), frequency=config["frequency"])
    pull = config["pull"]
    return gpiozero.DigitalInputDevice(pin, pull_up={"up": True, "down": False}.get(pull),
                                       active_state=config["active_high"] if pull == "none" else None,
                                       bounce_time=config["debounce"] or None)


def keep_outputs_at_exit() -> None:
    """Take off gpiozero's exit handler, which turns every pin back into a floating input.

    An output must stay at its ``on_stop`` level after RasPy exits; the kernel of Raspberry Pi
    OS keeps a released output's level. (A forked executive ends with ``os._exit`` and never
    runs exit handlers; ``raspy run gpio`` does.)
    """
    atexit.unregister(gpiozero.devices._shutdown)


def check_devices(tables: list[Any]) -> None:
    """Build the devices without touching a pin, so a bad table stops start-up naming its entry."""
    devices = GpioDevices()
    for index, table in enumerate(tables):
        try:
            devices.add(table)
        except DeviceError as exc:
            raise exc.inside(index) from None


class Gpio(DeviceServer):
    """The ``gpio`` executive. Option ``devices``: a list of tables, one per device."""

    options = (Option("devices", list, [], "one table per pin: `name`, `kind`, `pin` and the kind's keys "
                                           "([devices](devices.md))", check_devices),)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, GpioDevices(with_defaults(self.options, settings.options)["devices"]), slot)
        self._dropped = DropLog(log)
        keep_outputs_at_exit()
        self.lines: dict[str, gpiozero.Device] = {}
        for device in self.devices.devices.values():
            self.lines[device.name] = self._open(device)

    def _open(self, device: GpioDevice) -> gpiozero.Device:
        try:
            line = open_line(device)
        except gpiozero.GPIOZeroError as exc:
            raise GpioError(f"{device.name}: cannot open GPIO{device.config()['pin']}: "
                            f"{type(exc).__name__}: {exc}") from None
        device.attach(line)
        if isinstance(device, GpioInput):
            line.when_activated = lambda: self._edge(device.name, True)
            line.when_deactivated = lambda: self._edge(device.name, False)
        return line

    def _edge(self, name: str, active: bool) -> None:
        """Runs in gpiozero's callback thread: publish the new level now, not at the next look."""
        with self._sending:
            with self._lock:
                body = self.reading_body(name, self.devices.edge(name, active, time.time()))
            self._send(name, body)

    def _send(self, name: str, body: bytes) -> None:
        """Send a reading; one that the kv server does not take is sent again at the next look."""
        try:
            self.publisher.send(keys.DEVICE, f"{self.service}.{name}", body)
        except RequestTimeout as exc:
            self._dropped(f"reading of {name} not published (sent again at the next look): {exc}")
            if body:
                with self._lock:
                    self.devices.changed(name)

    def _locked(self, frames: Frames) -> Frames:
        reply = super()._locked(frames)
        if self.devices.pending():
            self.publish_due(time.time())  # a set's confirmed level at once, not at the next look
        return reply

    def close(self) -> None:
        """Stop the inputs' callbacks and the workers, then drive each output to its ``on_stop`` level."""
        for device in self.devices.inputs():
            if device.name in self.lines:
                self.lines.pop(device.name).close()
        super().close()
        for device in self.devices.outputs():
            if device.name in self.lines:
                try:
                    self.lines[device.name].value = device.level("on_stop")
                except gpiozero.GPIOZeroError as exc:
                    log.error("%s: could not go to its on_stop level: %s", device.name, exc)
