"""The device model: a named, configurable thing a server offers.

A device class has an ``oid`` (``sensor.temperature``, ``media.tv``, ...), a
read-only ``template`` (its default configuration) and says whether it can be
polled. An instance owns a deep copy of its configuration, a bounded log and
its latest reading; nothing mutable is shared between instances (class-level
dicts would let every device see every other's).

Every refusal raises :class:`DeviceError` with a reason a user can act on;
a service turns it into ``400``.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from raspy.errors import InvalidValue
from raspy.mdp.protocol import NAME

logger = logging.getLogger(__name__)

#: Device names: no dots, since a dot separates a device from its sub-device.

#: ``poll`` values: -1 not pollable, 0 not polled, n > 0 polled every n seconds.
NOT_POLLABLE = -1
NOT_POLLED = 0


class DeviceError(InvalidValue):
    """A device, configuration or reading that is refused, with the reason (and the key, when one is at fault)."""


def freeze(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a class template, so no instance can change it by accident."""
    return MappingProxyType(dict(template))


@dataclass(frozen=True)
class Reading:
    """The latest value of a device, as servers publish it."""

    value: Any
    unit: str | None
    timestamp: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BaseDevice:
    """A device: name, configuration (template plus overrides and extra keys), log, reading."""

    oid: ClassVar[str] = "device"
    pollable: ClassVar[bool] = False
    template: ClassVar[Mapping[str, Any]] = freeze({"poll": NOT_POLLABLE})
    #: How many log lines a device keeps.
    log_size: ClassVar[int] = 100

    def __init__(self, config: Mapping[str, Any]) -> None:
        full = self._complete(config)
        self.check(full)
        self._config: dict[str, Any] = {}
        self._log: deque[str] = deque(maxlen=self.log_size)
        self.reading: Reading | None = None
        self._apply(full)
        self.note("created")

    # -- construction and validation -------------------------------------

    @classmethod
    def new(cls, json: Mapping[str, Any]) -> "BaseDevice":
        """A device of this class from its JSON (template keys may be left out)."""
        return cls(json)

    @classmethod
    def _complete(cls, json: Any) -> dict[str, Any]:
        if not isinstance(json, Mapping):
            raise DeviceError(f"a device is a dict, got {type(json).__name__}")
        return {**copy.deepcopy(dict(cls.template)), **json}

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        """Raise :class:`DeviceError` unless ``json`` is a valid full configuration of this class."""
        if not isinstance(json, Mapping):
            raise DeviceError(f"a device configuration is a dict, got {type(json).__name__}")
        if "name" not in json:
            raise DeviceError("a device needs a 'name'", "name")
        name = json["name"]
        if not isinstance(name, str) or not NAME.match(name):
            raise DeviceError(f"bad device name {name!r}: letters, digits, '_' and '-' only", "name")
        oid = json.get("oid", cls.oid)
        if oid != cls.oid:
            raise DeviceError(f"oid {oid!r} does not match class {cls.__name__} ({cls.oid!r})", "oid")
        cls.check_poll(json.get("poll"))

    @classmethod
    def check_poll(cls, seconds: Any) -> None:
        """The poll rules: -1 for classes that cannot be polled, else 0 or a positive integer."""
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise DeviceError(f"poll must be an integer number of seconds, got {seconds!r}", "poll")
        if not cls.pollable:
            if seconds != NOT_POLLABLE:
                raise DeviceError(f"{cls.oid} devices cannot be polled: poll is always -1", "poll")
        elif seconds < 0:
            raise DeviceError("poll must be 0 (not polled) or a positive number of seconds", "poll")

    def _apply(self, full: Mapping[str, Any]) -> None:
        """Store a checked full configuration (the oid is the class's, not stored)."""
        self._config = {"name": full["name"], **{k: copy.deepcopy(v) for k, v in full.items() if k != "oid"}}

    # -- what the device commands read and write ---------------------------

    @property
    def name(self) -> str:
        return self._config["name"]

    @property
    def json(self) -> dict[str, Any]:
        """The device as a JSON-able dict; ``new(json)`` gives an equal device."""
        return {"oid": self.oid, **self.config()}

    def fullname(self, prefix: str) -> str:
        """``<prefix>.<name>``, where the prefix is ``<host>.<service>``."""
        return f"{prefix}.{self.name}"

    def config(self, new: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The configuration; with ``new``, first merge it in (it must carry this device's name)."""
        if new is not None:
            self._configure(new)
        return copy.deepcopy(self._config)

    def _configure(self, new: Any) -> None:
        if not isinstance(new, Mapping):
            raise DeviceError(f"a configuration is a dict, got {type(new).__name__}")
        if "name" not in new:
            raise DeviceError(f"a configuration must carry the device's name ('name': {self.name!r})")
        if new["name"] != self.name:
            raise DeviceError(f"name {new['name']!r} is not this device's ({self.name!r}); renaming is not supported")
        merged = {**self.config(), **new}
        self.check(merged)
        self._apply(merged)
        self.note(f"config set: {', '.join(sorted(k for k in new if k != 'name')) or 'nothing'}")

    def poll(self, seconds: Any = None) -> int:
        """The poll interval; with ``seconds``, first set it (by the poll rules)."""
        if seconds is not None:
            self.check_poll(seconds)
            self._config["poll"] = seconds
            self.note(f"poll set to {seconds}")
        return self._config["poll"]

    def log(self, limit: int | None = None) -> list[str]:
        """The device's most recent log lines, oldest first."""
        lines = list(self._log)
        if limit is None:
            return lines
        return lines[-limit:] if limit > 0 else []

    def note(self, message: str) -> None:
        """Add a line to the device's log (and to the process log at debug level)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.append(f"{stamp} {message}")
        logger.debug("%s %s: %s", self.oid, self.name, message)

    def reset(self) -> dict[str, Any]:
        """Back to the class template, keeping the name; returns the new configuration."""
        self._apply({**copy.deepcopy(dict(self.template)), "name": self.name})
        self.note("reset to template")
        return self.config()

    # -- readings ----------------------------------------------------------

    def check_reading(self, value: Any) -> None:
        """Raise :class:`DeviceError` if ``value`` cannot be a reading of this device."""

    def record(self, value: Any, timestamp: float) -> Reading:
        """Keep ``value`` as the latest reading, in the configured unit."""
        self.check_reading(value)
        self.reading = Reading(value, self._config.get("unit"), timestamp)
        return self.reading

    def subdevices(self) -> Mapping[str, "BaseDevice"]:
        """Named parts addressed as ``<name>.<part>``; most devices have none."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def from_table(kinds: Mapping[str, type[BaseDevice]], table: Any, what: str) -> BaseDevice:
    """A device from a configuration table whose ``kind`` picks the class among ``kinds``."""
    if not isinstance(table, Mapping):
        raise DeviceError(f"{what} is a table with 'name' and 'kind', got {type(table).__name__}")
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise DeviceError(f"{what} needs 'kind', one of {sorted(kinds)}; got {kind!r}", "kind")
    return kinds[kind].new(table)


def lookup(devices: Mapping[str, BaseDevice], address: str) -> BaseDevice:
    """The device at ``name`` or ``name.subdevice`` (e.g. ``tv.volume``); KeyError names what is missing."""
    name, _, part = address.partition(".")
    if name not in devices:
        raise KeyError(f"no device {name!r}")
    device = devices[name]
    if not part:
        return device
    parts = device.subdevices()
    if part not in parts:
        raise KeyError(f"device {name!r} has no sub-device {part!r}; it has {sorted(parts)}")
    return parts[part]
