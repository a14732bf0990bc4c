"""Import rules: external MQTT topics (Zigbee2MQTT, Tasmota, ESPHome, ...) read as RasPy device readings.

A rule is a table of the ``import`` option::

    {topic = "zigbee2mqtt/+", json = true, units = {temperature = "C"}, command_topic = "zigbee2mqtt/{0}/set"}
    {topic = "tele/+/SENSOR", json = true}                   # Tasmota; TempUnit etc. give the units
    {topic = "esphome/+/sensor/+/state", unit = "C"}
    {topic = "esphome/+/switch/+/state", command_topic = "esphome/{0}/switch/{1}/command"}

The ``+`` levels of the topic name the device (joined by ``_``, or by the
``name`` template: ``{0}``, ``{1}``, ... are the ``+`` levels). A JSON rule
turns each field of an object into a device ``<name>_<field>`` (nested objects
flattened with ``_``); a plain rule makes one device of the payload. ``ON`` and
``OFF`` read as true and false. With ``command_topic``, a device can be set:
a JSON rule sends ``{"<field>": value}``, a plain one the value itself.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from raspy.errors import InvalidValue
from raspy.mqtt.discovery import OFF, ON

#: Longest device name an import makes (longer ones are cut).
NAME_LENGTH = 64
#: How deep nested JSON objects are flattened into fields; deeper ones are left out.
DEPTH = 4
#: Longest text reading kept; longer text values are left out.
TEXT_LENGTH = 256
#: Tasmota's unit fields, and the fields they give their unit to.
UNIT_FIELDS = {"TempUnit": ("Temperature", "DewPoint"), "PressureUnit": ("Pressure", "SeaPressure"),
               "SpeedUnit": ("Speed",)}

_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_RULE_KEYS = ("topic", "json", "name", "fields", "units", "unit", "command_topic")


@dataclass(frozen=True)
class Reading:
    """One value an import rule found: the device name, value, unit and where a command goes."""

    name: str
    value: Any
    unit: str | None
    field: str | None = None
    command_topic: str | None = None


def device_name(text: str) -> str:
    """``text`` as a RasPy device name: other characters become ``_``, cut to NAME_LENGTH."""
    return _NOT_NAME.sub("_", text).strip("_")[:NAME_LENGTH]


def plain_value(text: str) -> Any:
    """``ON``/``OFF`` as true/false, a number as a number, else the text."""
    word = text.strip()
    if word.upper() in (ON, OFF):
        return word.upper() == ON
    try:
        number = float(word)
    except ValueError:
        return word
    if not math.isfinite(number):
        return word
    return int(number) if number.is_integer() and "." not in word and "e" not in word.lower() else number


def _template_check(template: str, wildcards: int, what: str) -> None:
    """A template may use {0} .. {n-1} for the topic's n '+' levels, and nothing else."""
    try:
        template.format(*["x"] * wildcards)
    except (IndexError, KeyError, ValueError):
        allowed = f"{{0}} .. {{{wildcards - 1}}}, the topic's '+' levels" if wildcards else "no {} field"
        raise InvalidValue(f"{template!r} may only use {allowed}", what) from None


@dataclass(frozen=True)
class ImportRule:
    """One rule of the ``import`` option; see the module's doc."""

    topic: str
    json: bool = False
    name: str | None = None
    fields: tuple[str, ...] | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    unit: str | None = None
    command_topic: str | None = None

    @classmethod
    def from_table(cls, table: Any) -> "ImportRule":
        """A checked rule; :class:`~raspy.errors.InvalidValue` says what is wrong, and under which key."""
        if not isinstance(table, Mapping):
            raise InvalidValue(f"a rule is a table such as {{topic = \"zigbee2mqtt/+\", json = true}}, got {table!r}")
        unknown = sorted(set(table) - set(_RULE_KEYS))
        if unknown:
            raise InvalidValue(f"unknown key; known: {', '.join(_RULE_KEYS)}", unknown[0])
        topic = table.get("topic")
        if not isinstance(topic, str) or not topic or "#" in topic or "\0" in topic:
            raise InvalidValue(f"{topic!r} is not a topic filter with '+' wildcards ('#' is not taken)", "topic")
        levels = topic.split("/")
        if any("+" in level and level != "+" for level in levels):
            raise InvalidValue(f"{topic!r}: '+' must be a whole level", "topic")
        wildcards = levels.count("+")
        is_json = table.get("json", False)
        if not isinstance(is_json, bool):
            raise InvalidValue(f"{is_json!r} is not true or false", "json")
        name, command = table.get("name"), table.get("command_topic")
        for key, value in (("name", name), ("command_topic", command), ("unit", table.get("unit"))):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidValue(f"{value!r} is not a non-empty string", key)
        if name is not None:
            _template_check(name, wildcards, "name")
        elif not wildcards and not device_name(levels[-1]):
            raise InvalidValue(f"{topic!r} gives no device name: add name = \"...\"", "topic")
        if command is not None:
            _template_check(command, wildcards, "command_topic")
            if "+" in command or "#" in command:
                raise InvalidValue(f"{command!r} may not hold wildcards", "command_topic")
        fields = table.get("fields")
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields)):
            raise InvalidValue(f"{fields!r} is not a list of field names", "fields")
        units = table.get("units", {})
        if not isinstance(units, Mapping) or not all(isinstance(u, str) for u in units.values()):
            raise InvalidValue(f"{units!r} is not a table of field = \"unit\"", "units")
        if not is_json and (fields is not None or units):
            raise InvalidValue("fields and units are for json = true rules; a plain rule takes unit",
                               "fields" if fields is not None else "units")
        return cls(topic, is_json, name, tuple(fields) if fields is not None else None, dict(units),
                   table.get("unit"), command)

    def wildcards(self, topic: str) -> list[str] | None:
        """The ``+`` levels of ``topic`` when it matches this rule, else None."""
        levels, pattern = topic.split("/"), self.topic.split("/")
        if len(levels) != len(pattern):
            return None
        parts = []
        for level, want in zip(levels, pattern):
            if want == "+":
                parts.append(level)
            elif level != want:
                return None
        return parts

    def readings(self, topic: str, text: str) -> list[Reading]:
        """The readings in one message; ``ValueError`` for a payload of the wrong shape."""
        parts = self.wildcards(topic)
        if parts is None:
            return []
        base = device_name(self.name.format(*parts) if self.name else "_".join(parts) or self.topic.split("/")[-1])
        if not base:
            raise ValueError(f"topic {topic!r} gives no device name")
        command = self.command_topic.format(*parts) if self.command_topic else None
        if not self.json:
            if not text.strip():
                raise ValueError("empty payload")
            return [Reading(base, plain_value(text), self.unit, None, command)]
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("payload is not JSON") from None
        if not isinstance(document, dict):
            raise ValueError(f"payload is JSON {type(document).__name__}, not an object")
        units = {**self._tasmota_units(document), **self.units}
        found = []
        for name, value in _flatten(document):
            if name in UNIT_FIELDS or (self.fields is not None and name not in self.fields):
                continue
            value = _json_value(value)
            if value is not None:
                found.append(Reading(device_name(f"{base}_{name}"), value, units.get(name), name, command))
        if not found:
            raise ValueError("no field with a number, true/false or short text")
        return found

    @staticmethod
    def _tasmota_units(document: Mapping[str, Any]) -> dict[str, str]:
        """Units Tasmota states in the payload (``"TempUnit": "C"``), by flattened field name."""
        units = {}
        for unit_field, targets in UNIT_FIELDS.items():
            unit = document.get(unit_field)
            if isinstance(unit, str):
                units.update({name: unit for name, _ in _flatten(document) if name.split("_")[-1] in targets})
        return units

    def command_payload(self, reading_field: str | None, value: Any) -> str:
        """What to publish on the command topic to set a device to ``value``."""
        if isinstance(value, bool):
            value = ON if value else OFF
        if self.json:
            return json.dumps({reading_field: value}, separators=(",", ":"))
        return value if isinstance(value, str) else json.dumps(value)


def _flatten(document: Mapping[str, Any], prefix: str = "", depth: int = 1) -> Iterator[tuple[str, Any]]:
    """``(field, value)`` of a JSON object, nested objects joined with ``_``, up to DEPTH levels."""
    for key, value in document.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            if depth < DEPTH:
                yield from _flatten(value, name, depth + 1)
        else:
            yield name, value


def _json_value(value: Any) -> Any:
    """A reading from one JSON field: numbers, true/false (and ON/OFF), short text; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= TEXT_LENGTH:
        return value.upper() == ON if value.upper() in (ON, OFF) else value
    return None
