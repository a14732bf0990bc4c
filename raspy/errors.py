"""RasPy's exceptions share one root, so a caller can catch everything RasPy raises at once.

Each part defines its own errors next to its code (``ProtocolError`` in
:mod:`raspy.mdp.protocol`, ``ConfigError`` in :mod:`raspy.house.config`, ...),
all derived from :class:`RaspyError`. A timeout is :class:`RequestTimeout` in
every client (MDP, key/value, Titanic), which is also a builtin
:class:`TimeoutError`.
"""
from __future__ import annotations


class RaspyError(Exception):
    """The root of every exception RasPy raises on purpose."""


class RequestTimeout(RaspyError, TimeoutError):
    """A peer did not answer in time: the broker, a service, the key/value server or Titanic."""


class InvalidValue(RaspyError, ValueError):
    """A value refused with the reason, and where in it the fault sits.

    ``where`` holds the keys and list indexes from the outside in (``("devices", 2, "cycle")``),
    so a configuration error can name the key and find its line; it may be empty.
    """

    def __init__(self, reason: str, *where: str | int) -> None:
        super().__init__(reason)
        self.reason, self.where = reason, where

    def inside(self, *outer: str | int) -> "InvalidValue":
        """The same refusal (same class), seen from the value that holds this one under ``outer``."""
        return type(self)(self.reason, *outer, *self.where)
