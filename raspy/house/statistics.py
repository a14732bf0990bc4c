"""Named values an executive exposes (``<module>.snmp.<key>``), and the service that answers for them.

The default counters (requests, replies, errors, bytes in/out) are not kept
twice: the executive's board slot holds them (the hot path calls
``slot.count(...)``, which the supervisor and ``raspy status`` also read), and
:class:`Statistics` shows them as SNMP Counter32 views of the slot. Other
values (:class:`SNMPCounter`, :class:`SNMPFloat`, :class:`SNMPString`) live
in the :class:`Statistics` object itself; an :class:`SNMPGauge` is read from
elsewhere each time it is asked for.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from raspy.house.board import Board, Slot
from raspy.mdp.protocol import NAME_PART
from raspy.mdp.service import Service, bad_request, not_found

__all__ = ["SNMP", "SNMPCounter", "SNMPFloat", "SNMPGauge", "SNMPString", "SlotCounter", "Statistics",
           "StatisticsService"]

_OID = re.compile(rf"{NAME_PART}(\.{NAME_PART})*\.snmp\.{NAME_PART}\Z")
COUNTER32 = 2 ** 32

#: The counters every executive has: key (a field of the board slot) -> doc.
DEFAULT_COUNTERS = {
    "requests": "requests received",
    "replies": "replies sent",
    "errors": "requests answered with an error status or dropped as malformed",
    "bytes_in": "bytes received in request bodies",
    "bytes_out": "bytes sent in reply bodies",
}


def oid(module: str, key: str) -> str:
    """The oid ``<module>.snmp.<key>``, checked."""
    return _check_oid(f"{module}.snmp.{key}")


def _check_oid(value: str) -> str:
    if not isinstance(value, str) or not _OID.match(value):
        raise ValueError(f"bad oid {value!r}: must be <module>.snmp.<key> (letters, digits, '_', '-')")
    return value


class SNMP:
    """A named value with a doc string; subclasses say what kind of value."""

    kind = "value"

    def __init__(self, oid: str, doc: str) -> None:
        self.oid = _check_oid(oid)
        self.doc = doc

    @property
    def value(self) -> Any:
        raise NotImplementedError

    def describe(self) -> dict:
        """``{value, doc, type}``, as the statistics service sends it."""
        return {"value": self.value, "doc": self.doc, "type": self.kind}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.oid}={self.value!r}>"


class SNMPCounter(SNMP):
    """A 32-bit counter that wraps at 2**32, like SNMP Counter32 (readers take differences)."""

    kind = "counter"

    def __init__(self, oid: str, doc: str) -> None:
        super().__init__(oid, doc)
        self._value = 0

    @property
    def value(self) -> int:
        return self._value

    def inc(self, n: int = 1) -> None:
        if n < 0:
            raise ValueError("a counter only goes up")
        self._value = (self._value + n) % COUNTER32


class SNMPGauge(SNMP):
    """A value read when asked (a queue's length, a number kept elsewhere): ``read()`` runs per request."""

    kind = "gauge"

    def __init__(self, oid: str, doc: str, read: Callable[[], int | float]) -> None:
        super().__init__(oid, doc)
        self.read = read

    @property
    def value(self) -> int | float:
        return self.read()


class SlotCounter(SNMPCounter):
    """A Counter32 view of a 64-bit counter of a board slot; counted through the slot."""

    def __init__(self, oid: str, doc: str, slot: Slot, field: str) -> None:
        super().__init__(oid, doc)
        self.slot = slot
        self.field = field

    @property
    def value(self) -> int:
        return getattr(self.slot.read(), self.field) % COUNTER32

    def inc(self, n: int = 1) -> None:
        self.slot.count(**{self.field: n})


class SNMPFloat(SNMP):
    """A float gauge (a temperature, a load)."""

    kind = "float"

    def __init__(self, oid: str, doc: str, value: float = 0.0) -> None:
        super().__init__(oid, doc)
        self.value = value

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, value: float) -> None:
        self._value = float(value)


class SNMPString(SNMP):
    """A text value (a version, a state)."""

    kind = "string"

    def __init__(self, oid: str, doc: str, value: str = "") -> None:
        super().__init__(oid, doc)
        self.value = value

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{self.oid} holds text, not {type(value).__name__}")
        self._value = value


class Statistics:
    """The values of one executive, with the default counters read from its board slot.

    Without a slot (an executive run alone, tests) a private one-slot board
    stands in, so the code path is the same. Count with :attr:`count`
    (``stats.count(requests=1, bytes_in=n)``), the slot's hot-path method.
    """

    def __init__(self, module: str, slot: Slot | None = None) -> None:
        self.module = module
        self.slot = slot if slot is not None else Board.private(1).slot(0)
        self.count = self.slot.count
        self._values: dict[str, SNMP] = {}
        for key, doc in DEFAULT_COUNTERS.items():
            self.add(SlotCounter(oid(module, key), doc, self.slot, key))

    def add(self, value: SNMP) -> SNMP:
        """Add a value and return it; an oid already present is a ``ValueError``."""
        if value.oid in self._values:
            raise ValueError(f"duplicate oid {value.oid!r}")
        self._values[value.oid] = value
        return value

    def get(self, oid: str) -> SNMP:
        """The value of an oid; ``KeyError`` if unknown."""
        try:
            return self._values[oid]
        except KeyError:
            raise KeyError(f"unknown oid {oid!r}") from None

    def list_keys(self) -> list[str]:
        return sorted(self._values)

    def all(self) -> dict[str, dict]:
        """``oid -> {value, doc, type}`` for every value."""
        return {key: self._values[key].describe() for key in self.list_keys()}


class StatisticsService(Service):
    """Answers ``list_keys``, ``get <oid>`` and ``all`` (served as ``<host>.<service>.statistics``)."""

    def __init__(self, statistics: Statistics) -> None:
        self.statistics = statistics

    @staticmethod
    def _no_args(command: str, args: Any) -> None:
        if args is not None:
            raise bad_request(f"{command} takes no arguments")

    def do_list_keys(self, args: Any) -> list[str]:
        self._no_args("list_keys", args)
        return self.statistics.list_keys()

    def do_get(self, args: Any) -> dict:
        if not isinstance(args, str):
            raise bad_request("get needs one oid (a string)")
        try:
            return self.statistics.get(args).describe()
        except KeyError:
            raise not_found(f"unknown oid {args!r}") from None

    def do_all(self, args: Any) -> dict[str, dict]:
        self._no_args("all", args)
        return self.statistics.all()
