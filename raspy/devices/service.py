"""The commands every device server answers, on top of :class:`raspy.mdp.service.Service`.

Argument shapes (``args`` is the msgpack-decoded frame):

- ``list_keys``: none; result: the device names, sorted.
- ``config``: ``[name]`` gets, ``[name, {...}]`` sets (the dict must carry ``"name"``); result: the config
  with the device's ``oid``, which tells a client what kind of device it is (the MQTT bridge reads it).
- ``poll``: ``[name]`` gets, ``[name, seconds]`` sets; result: the interval (-1, 0 or n).
- ``log``: ``name``; result: the device's recent log lines.
- ``reset``: ``name``; result: the config after the reset.

A name may address a sub-device (``tv.volume``). A refused value answers
``400`` with the reason, an unknown device ``404``.

The service also says when each device is due to be published (:meth:`DeviceService.due`): once
when first seen, so subscribers know every device from the start, then every ``poll`` seconds, and
at the publisher's next look after a command changed it or its last send failed.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from raspy.devices import BaseDevice, DeviceError, Reading, lookup
from raspy.mdp.service import Service, bad_request, not_found


@contextmanager
def refusals() -> Iterator[None]:
    """Turn a :class:`DeviceError` into ``400`` with its reason."""
    try:
        yield
    except DeviceError as exc:
        raise bad_request(str(exc)) from None


def name_arg(args: Any) -> str:
    """The device name of a command whose args are one name."""
    if not isinstance(args, str) or not args:
        raise bad_request(f"args must be a device name, got {args!r}")
    return args


def name_and_value(args: Any) -> tuple[str, Any]:
    """``(name, value)`` of args ``[name]`` (value None) or ``[name, value]``."""
    if not isinstance(args, list) or not 1 <= len(args) <= 2:
        raise bad_request(f"args must be [name] or [name, value], got {args!r}")
    return name_arg(args[0]), (args[1] if len(args) == 2 else None)


def reading_result(reading: Reading, now: float) -> dict[str, Any]:
    """A reading as ``get`` answers it: value, unit, timestamp and age in seconds."""
    return {**reading.as_dict(), "age": max(0.0, now - reading.timestamp)}


class DeviceService(Service):
    """A service over a dict of devices by name, and their publishing schedule."""

    def __init__(self) -> None:
        self.devices: dict[str, BaseDevice] = {}
        self._published: dict[str, float] = {}  # name -> timestamp of the reading last published
        self._changed: set[str] = set()  # published at the next look, whatever their poll interval

    def device(self, name: str) -> BaseDevice:
        """The device (or sub-device) called ``name``, or ``404``."""
        try:
            return lookup(self.devices, name)
        except KeyError as exc:
            raise not_found(exc.args[0]) from None

    def remove(self, name: str) -> None:
        """Forget the device ``name`` and its schedule."""
        del self.devices[name]
        self._published.pop(name, None)
        self._changed.discard(name)

    def changed(self, name: str) -> None:
        """Publish ``name`` at the next look: a command changed it, or its last send failed."""
        self._changed.add(name)

    def pending(self) -> bool:
        """Whether a device waits to be published before its poll interval says so."""
        return bool(self._changed)

    def due(self, now: float) -> list[tuple[str, Reading]]:
        """Readings to publish now: devices never published or changed since, and those whose poll passed."""
        out = []
        for name, device in sorted(self.devices.items()):
            interval, last = device.poll(), self._published.get(name)
            if last is None or name in self._changed or (interval > 0 and now - last >= interval):
                out.append((name, self.published(name, device.read(now))))
        return out

    def published(self, name: str, reading: Reading) -> Reading:
        """Note that ``reading`` of ``name`` is being published."""
        self._changed.discard(name)
        self._published[name] = reading.timestamp
        return reading

    def next_due(self, now: float) -> float | None:
        """When :meth:`due` has something next (wall time), for a publisher to sleep until.

        Infinity: nothing until a command changes a device. A service with a schedule of its own
        that cannot tell returns None.
        """
        if self._changed or len(self._published) < len(self.devices):
            return now
        return min((self._published[name] + device.poll() for name, device in self.devices.items()
                    if device.poll() > 0), default=math.inf)

    def do_list_keys(self, args: Any) -> list[str]:
        return sorted(self.devices)

    def do_config(self, args: Any) -> Mapping[str, Any]:
        name, new = name_and_value(args)
        device = self.device(name)
        with refusals():
            return {"oid": device.oid, **device.config(new)}

    def do_poll(self, args: Any) -> int:
        name, seconds = name_and_value(args)
        device = self.device(name)
        with refusals():
            return device.poll(seconds)

    def do_log(self, args: Any) -> list[str]:
        return self.device(name_arg(args)).log()

    def do_reset(self, args: Any) -> Mapping[str, Any]:
        return self.device(name_arg(args)).reset()
