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
"""
from __future__ import annotations

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
    """A service over a dict of devices by name."""

    def __init__(self) -> None:
        self.devices: dict[str, BaseDevice] = {}

    def device(self, name: str) -> BaseDevice:
        """The device (or sub-device) called ``name``, or ``404``."""
        try:
            return lookup(self.devices, name)
        except KeyError as exc:
            raise not_found(exc.args[0]) from None

    def next_due(self, now: float) -> float | None:
        """When the next reading is due (wall time), for a publisher to sleep until; None: unknown."""
        return None

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
