"""GPIO devices: relays and switches, dimmers, and binary inputs (buttons, contacts, motion sensors).

The model only: configuration, its checks, and what a value means. The pin
itself is a :class:`Line` the ``gpio`` executive attaches (a gpiozero device);
every value a device reports is read from its line, never remembered from the
last request, so ``get`` and what is published show what the pin does.

Pins are BCM numbers of the 40-pin header (0-27). GPIO2 and GPIO3 carry the
board's fixed 1.8 kOhm pull-ups (I2C): a released pin there reads high, before
RasPy starts and after it dies, so no output could keep a safe "off" on them.
They take inputs only, with ``pull = "up"``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Mapping, Protocol

from raspy.devices.base import NOT_POLLED, BaseDevice, DeviceError, Reading, freeze, from_table
from raspy.devices.simulated import switch_state

#: BCM numbers of the GPIOs on the 40-pin header.
HEADER_PINS = range(0, 28)
#: Pins with a fixed pull-up on the board: inputs only (see the module's docstring).
FIXED_PULL_UP = frozenset({2, 3})
PULLS = ("up", "down", "none")
#: Longest debounce, in seconds: a longer one would hide real presses.
MAX_DEBOUNCE = 1.0
#: PWM frequencies a dimmer accepts, in Hz.
FREQUENCIES = (1, 10_000)


class Line(Protocol):
    """What a device needs of its pin: gpiozero's ``value`` (0/1, or 0.0-1.0 for PWM)."""

    value: float


def check_pin(pin: Any) -> int:
    """A BCM pin number of the header, or :class:`DeviceError`."""
    if isinstance(pin, bool) or not isinstance(pin, int) or pin not in HEADER_PINS:
        raise DeviceError(f"pin must be a BCM GPIO number from 0 to 27, got {pin!r}", "pin")
    return pin


def check_bool(what: str, value: Any, *where: str) -> bool:
    if not isinstance(value, bool):
        raise DeviceError(f"{what} must be true or false, got {value!r}", *where)
    return value


def check_level(what: str, value: Any, *where: str) -> float:
    """A dimmer level: a number from 0 to 100 (per cent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 100:
        raise DeviceError(f"{what} must be a number from 0 to 100, got {value!r}", *where)
    return value


class GpioDevice(BaseDevice):
    """A device on one GPIO pin. ``kind`` names it in configuration tables."""

    kinds: ClassVar[tuple[str, ...]] = ()
    output: ClassVar[bool] = False
    pollable = True
    template = freeze({"poll": NOT_POLLED, "kind": None, "pin": None, "unit": None})
    #: Keys that say how the pin is wired: fixed while the executive runs.
    wiring: ClassVar[tuple[str, ...]] = ("kind", "pin")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.line: Line | None = None
        self._loaded = self.config()  # what ``reset`` goes back to

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        unknown = sorted(set(json) - set(cls.template) - {"name", "oid"})
        if unknown:  # a typo such as active_hihg would leave a relay the wrong way round
            raise DeviceError(f"unknown key(s) {', '.join(unknown)} for a {json.get('kind')}; "
                              f"known: {', '.join(sorted({'name', *cls.template}))}", unknown[0])
        if json.get("kind") not in cls.kinds:
            raise DeviceError(f"kind {json.get('kind')!r} is not one of {list(cls.kinds)} ({cls.oid})", "kind")
        pin = check_pin(json.get("pin"))
        if cls.output and pin in FIXED_PULL_UP:
            raise DeviceError(f"GPIO{pin} is input-only in RasPy: its fixed pull-up makes it read high "
                              "whenever RasPy does not drive it; use another pin for an output", "pin")
        unit = json.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise DeviceError(f"unit must be a string, got {unit!r}", "unit")

    def _configure(self, new: Any) -> None:
        if isinstance(new, Mapping):
            for key in self.wiring:
                if key in new and new[key] != self._config.get(key):
                    raise DeviceError(f"{key} is fixed while RasPy runs: change the configuration file "
                                      "and reload")
        super()._configure(new)

    def reset(self) -> dict[str, Any]:
        """Back to the configuration RasPy was started with (a pin cannot go back to a template)."""
        self._apply(copy.deepcopy(self._loaded))
        self.note("reset to the configuration file's table")
        return self.config()

    def attach(self, line: Line) -> None:
        """Give the device its pin; from now on its value is the pin's."""
        self.line = line

    def pin_value(self) -> float:
        if self.line is None:
            raise DeviceError(f"{self.name} has no pin attached")
        return self.line.value

    def value(self) -> Any:
        """The device's value, read from its pin now."""
        raise NotImplementedError

    def read(self, now: float) -> Reading:
        """Read the pin and record the value as the latest reading."""
        return self.record(self.value(), now)


class GpioOutput(GpioDevice):
    """An output: driven to ``initial`` when RasPy starts and to ``on_stop`` when it stops."""

    output = True
    wiring = (*GpioDevice.wiring, "active_high")

    def set(self, value: Any) -> None:
        """Drive the pin; what it reads back afterwards is the device's value."""
        raise NotImplementedError

    def level(self, key: str) -> float:
        """The pin value (0-1) for the configured ``initial`` or ``on_stop``."""
        raise NotImplementedError


class GpioSwitch(GpioOutput):
    """A relay or any on/off output; ``active_high = false`` for boards switched by a low pin."""

    oid = "switch.relay"
    kinds = ("relay", "switch")
    template = freeze({**GpioDevice.template, "active_high": True, "initial": False, "on_stop": False})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        check_bool("active_high", json.get("active_high"), "active_high")
        for key in ("initial", "on_stop"):
            try:
                switch_state(json.get(key))
            except DeviceError as exc:
                raise DeviceError(f"{key}: {exc}", key) from None

    def value(self) -> bool:
        return bool(self.pin_value())

    def set(self, value: Any) -> None:
        state = switch_state(value)
        self.pin_value()  # refuses before anything when no pin is attached
        self.line.value = state
        self.note(f"set {'on' if state else 'off'}")

    def level(self, key: str) -> float:
        return float(switch_state(self._config[key]))

    def check_reading(self, value: Any) -> None:
        check_bool(f"a reading of {self.name}", value)


class GpioDimmer(GpioOutput):
    """A light (or fan) dimmed by PWM, 0 (off) to 100 %."""

    oid = "light.dimmer"
    kinds = ("dimmer",)
    template = freeze({**GpioDevice.template, "unit": "%", "active_high": True, "initial": 0, "on_stop": 0,
                       "frequency": 100})
    wiring = (*GpioOutput.wiring, "frequency")

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        check_bool("active_high", json.get("active_high"), "active_high")
        check_level("initial", json.get("initial"), "initial")
        check_level("on_stop", json.get("on_stop"), "on_stop")
        frequency, (low, high) = json.get("frequency"), FREQUENCIES
        if isinstance(frequency, bool) or not isinstance(frequency, int) or not low <= frequency <= high:
            raise DeviceError(f"frequency must be an integer number of Hz from {low} to {high}, got {frequency!r}",
                              "frequency")

    def value(self) -> float:
        return round(self.pin_value() * 100, 2)

    def set(self, value: Any) -> None:
        level = check_level(f"the level of {self.name}", value)
        self.pin_value()
        self.line.value = level / 100
        self.note(f"set to {level:g} %")

    def level(self, key: str) -> float:
        return self._config[key] / 100

    def check_reading(self, value: Any) -> None:
        check_level(f"a reading of {self.name}", value)


class GpioInput(GpioDevice):
    """A binary input: true while active (pressed, closed, motion seen).

    ``pull = "up"`` (the default) means the switch connects the pin to ground, so a low pin is
    active; ``"down"`` the reverse; ``"none"`` for a pull resistor of your own, with
    ``active_high`` saying which level is active. ``debounce`` (seconds) ignores an edge that
    does not last; the driver reports the edge once the level has held that long.
    """

    template = freeze({**GpioDevice.template, "pull": "up", "active_high": None, "debounce": 0.02})
    wiring = (*GpioDevice.wiring, "pull", "active_high", "debounce")

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        pin, pull, active_high = json["pin"], json.get("pull"), json.get("active_high")
        if pull not in PULLS:
            raise DeviceError(f"pull must be one of {list(PULLS)}, got {pull!r}", "pull")
        if pin in FIXED_PULL_UP and pull != "up":
            raise DeviceError(f"GPIO{pin} has a fixed pull-up on the board: pull must be \"up\"", "pull")
        if pull == "none":
            check_bool("active_high (needed with pull = \"none\")", active_high, "active_high")
        elif active_high is not None:
            raise DeviceError(f"active_high follows from pull = {pull!r}; give it only with pull = \"none\"",
                              "active_high")
        debounce = json.get("debounce")
        if isinstance(debounce, bool) or not isinstance(debounce, (int, float)) \
                or not 0 <= debounce <= MAX_DEBOUNCE:
            raise DeviceError(f"debounce must be a number of seconds from 0 to {MAX_DEBOUNCE:g}, got {debounce!r}",
                              "debounce")

    def value(self) -> bool:
        return bool(self.pin_value())

    def check_reading(self, value: Any) -> None:
        check_bool(f"a reading of {self.name}", value)


class GpioButton(GpioInput):
    oid = "sensor.button"
    kinds = ("button",)


class GpioContact(GpioInput):
    """A door or window contact, a float switch: true while closed."""

    oid = "sensor.contact"
    kinds = ("contact",)


class GpioMotion(GpioInput):
    """A PIR motion sensor: true while it sees motion. Its output is clean, so no debounce by default."""

    oid = "sensor.motion"
    kinds = ("motion",)
    template = freeze({**GpioInput.template, "pull": "down", "debounce": 0})


#: Classes by the ``kind`` of their configuration table.
KINDS: dict[str, type[GpioDevice]] = {
    kind: cls for cls in (GpioSwitch, GpioDimmer, GpioButton, GpioContact, GpioMotion) for kind in cls.kinds
}


def gpio_device(table: Any) -> GpioDevice:
    """A device from its configuration table; ``kind`` picks the class."""
    return from_table(KINDS, table, "a GPIO device")
