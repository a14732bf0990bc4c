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
