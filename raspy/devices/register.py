"""The register of device classes: builds the right class from ``{"oid": ..., "name": ..., ...}``."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, TypeVar

from raspy.devices.base import BaseDevice, DeviceError

D = TypeVar("D", bound=type[BaseDevice])


class DeviceRegister:
    """Device classes by oid; one register per server, so servers cannot step on each other."""

    def __init__(self, classes: Iterable[type[BaseDevice]] = ()) -> None:
        self._classes: dict[str, type[BaseDevice]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, device_class: D) -> D:
        """Add a class (usable as a decorator); a second class with the same oid is an error."""
        if not (isinstance(device_class, type) and issubclass(device_class, BaseDevice)):
            raise DeviceError(f"{device_class!r} is not a BaseDevice class")
        oid = device_class.oid
        if oid in self._classes:
            raise DeviceError(f"oid {oid!r} is already registered by {self._classes[oid].__name__}")
        self._classes[oid] = device_class
        return device_class

    def oids(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, oid: object) -> bool:
        return oid in self._classes

    def device_class(self, oid: Any) -> type[BaseDevice]:
        """The class registered for ``oid``."""
        if not isinstance(oid, str):
            raise DeviceError(f"oid must be a string, got {oid!r}")
        try:
            return self._classes[oid]
        except KeyError:
            raise DeviceError(f"unknown oid {oid!r}; known: {self.oids()}") from None

    def new(self, json: Any) -> BaseDevice:
        """A device from its JSON; the ``oid`` picks the class."""
        if not isinstance(json, Mapping):
            raise DeviceError(f"a device is a dict with 'oid' and 'name', got {type(json).__name__}")
        if "oid" not in json:
            raise DeviceError(f"a device needs an 'oid', one of {self.oids()}")
        return self.device_class(json["oid"]).new(json)
