"""Media devices: cameras and TVs. They are driven, not polled (poll is always -1).

A TV groups three controls (``channel``, ``volume``, ``power``). Their values
live in the TV's own configuration, so ``config`` of the TV shows them, and
each is also a sub-device addressed as ``<tv>.<control>`` (``tv.volume``)
with its own ``config``/``log``/``set``.
"""
from __future__ import annotations

from typing import Any, Mapping

from raspy.devices.base import BaseDevice, DeviceError, freeze


class MediaDevice(BaseDevice):
    """A media device."""

    oid = "media"
    template = freeze({"poll": -1})


class MediaCamera(MediaDevice):
    """A camera, with the URL its pictures are fetched from."""

    oid = "media.camera"
    template = freeze({**MediaDevice.template, "url": None})

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        url = json.get("url")
        if url is not None and not isinstance(url, str):
            raise DeviceError(f"camera url must be a string, got {url!r}")


def check_level(what: str, value: Any, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]``, or a :class:`DeviceError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DeviceError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


class MediaTV(MediaDevice):
    """A TV with its channel, volume and power controls."""

    oid = "media.tv"
    #: Control name -> (lowest, highest) value.
    controls = {"channel": (1, 999), "volume": (0, 100), "power": (0, 1)}
    template = freeze({**MediaDevice.template, "channel": 1, "volume": 20, "power": 0})

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._parts = {part: MediaControl(self, part) for part in self.controls}

    @classmethod
    def check(cls, json: Mapping[str, Any]) -> None:
        super().check(json)
        for part, (low, high) in cls.controls.items():
            check_level(part, json.get(part), low, high)

    def subdevices(self) -> Mapping[str, "MediaControl"]:
        return dict(self._parts)


class MediaControl(MediaDevice):
    """One control of a TV, addressed as ``<tv>.<control>``; its value is stored in the TV."""

    oid = "media.control"

    def __init__(self, parent: MediaTV, part: str) -> None:
        self.parent, self.part = parent, part
        super().__init__({"name": part})

    @property
    def range(self) -> tuple[int, int]:
        return self.parent.controls[self.part]

    def _apply(self, full: Mapping[str, Any]) -> None:
        super()._apply({k: v for k, v in full.items() if k not in ("value", "min", "max")})
        if "value" in full:
            self.parent._config[self.part] = full["value"]

    def config(self, new: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if new is not None:
            low, high = self.range
            if any(key in new and new[key] != bound for key, bound in (("min", low), ("max", high))):
                raise DeviceError(f"the range of {self.parent.name}.{self.part} is fixed: {low} to {high}")
            if "value" in new:
                check_level(f"{self.parent.name}.{self.part}", new["value"], low, high)
            self._configure(new)
        low, high = self.range
        return {**super().config(), "min": low, "max": high, "value": self.value}

    @property
    def value(self) -> int:
        return self.parent._config[self.part]

    def set(self, value: Any) -> int:
        """Set the control (checked against its range); the TV's config follows."""
        low, high = self.range
        self.parent._config[self.part] = check_level(f"{self.parent.name}.{self.part}", value, low, high)
        self.note(f"set to {value}")
        return value

    def reset(self) -> dict[str, Any]:
        self.set(self.parent.template[self.part])
        return self.config()
