"""The ``mqtt`` executive's options: one declarative list, checked when the configuration is read.

:data:`OPTIONS` names every option with its default, its check and what it
means; :func:`parse` refuses an unknown option (naming the known ones) and a
bad value (naming the option and why), so a mistake stops start-up instead of
showing up as a bridge that quietly does something else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from raspy.mqtt.imports import ImportRule
from raspy.mqtt.topics import check_prefix

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: ``auto``: MQTT 5, and 3.1.1 from the next attempt on when the broker refuses 5.
PROTOCOLS = ("auto", "5", "3.1.1")


@dataclass(frozen=True)
class Option:
    """One option: its default, a check that returns the value to use (or raises ValueError), what it means."""

    default: Any
    check: Callable[[Any], Any]
    doc: str


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def _readable(value: Any) -> Path:
    path = Path(_text(value)).expanduser()
    if not os.access(path, os.R_OK) or not path.is_file():
        raise ValueError(f"{value!r} is not a readable file")
    return path


def _url(value: Any) -> str:
    parts = urlsplit(_text(value))
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    if not parts.hostname or parts.username or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] (the login goes in username and password)")
    return f"{parts.scheme}://{parts.hostname}:{port or DEFAULT_PORTS[parts.scheme]}"


def _count(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{value!r} is not an integer from {low} to {high}")
        return value

    return check


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{value!r} is not a list of device name patterns such as \"pi.fake.*\"")
    return tuple(value)


def _rules(value: Any) -> tuple[ImportRule, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list of tables such as {{topic = \"zigbee2mqtt/+\", json = true}}")
    rules = []
    for index, table in enumerate(value):
        try:
            rules.append(ImportRule.from_table(table))
        except ValueError as exc:
            raise ValueError(f"[{index}]: {exc}") from None
    return tuple(rules)


def _protocol(value: Any) -> str:
    if value not in PROTOCOLS:
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, PROTOCOLS))}")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


#: Every option of the ``mqtt`` executive: name -> default, check, meaning.
OPTIONS: dict[str, Option] = {
    "url": Option("mqtt://127.0.0.1:1883", _url, "the MQTT broker: mqtt://HOST[:PORT], or mqtts:// for TLS"),
    "username": Option(None, _optional(_text), "login name at the MQTT broker"),
    "password": Option(None, _optional(_text), "login password (or password_file)"),
    "password_file": Option(None, _optional(_readable), "a file holding the login password"),
    "ca": Option(None, _optional(_readable), "mqtts: the CA certificate(s) to trust (default: the system's)"),
    "cert": Option(None, _optional(_readable), "mqtts: a client certificate (with key)"),
    "key": Option(None, _optional(_readable), "mqtts: the client certificate's private key"),
    "client_id": Option(None, _optional(_text), "MQTT client id (default raspy-<host>-<executive>)"),
    "protocol": Option("auto", _protocol, "MQTT version: auto (5, else 3.1.1), 5 or 3.1.1"),
    "discovery_prefix": Option("homeassistant", check_prefix, "Home Assistant's discovery prefix"),
    "base": Option("raspy", check_prefix, "first topic level of RasPy's own topics"),
    "commands": Option(["*"], _patterns, "which switches and dimmers take commands from MQTT (name patterns)"),
    "import": Option([], _rules, "rules that bring external MQTT topics in as devices"),
    "max_payload": Option(65536, _count(256, 16 * 1024 * 1024), "largest MQTT payload taken or sent, bytes"),
    "max_imported": Option(200, _count(0, 100_000), "most devices the import rules create"),
    "max_topics": Option(2000, _count(16, 1_000_000), "most retained topics the bridge holds for the broker"),
}


@dataclass(frozen=True)
class BridgeOptions:
    """The checked options, with defaults filled in."""

    url: str
    username: str | None
    password: str | None
    password_file: Path | None
    ca: Path | None
    cert: Path | None
    key: Path | None
    client_id: str | None
    protocol: str
    discovery_prefix: str
    base: str
    commands: tuple[str, ...]
    imports: tuple[ImportRule, ...] = field(default_factory=tuple)
    max_payload: int = 65536
    max_imported: int = 200
    max_topics: int = 2000

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts:")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or DEFAULT_PORTS["mqtt"]

    def login_password(self) -> str | None:
        """The password, read from ``password_file`` when that is where it is (trailing newline dropped)."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        return self.password


def parse(options: Mapping[str, Any]) -> BridgeOptions:
    """The checked options; ``ValueError`` names the option and the reason."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    values = {}
    for name, option in OPTIONS.items():
        try:
            values[name] = option.check(options.get(name, option.default))
        except ValueError as exc:
            raise ValueError(f"option {name}: {exc}") from None
    _check_together(values)
    values["imports"] = values.pop("import")
    return BridgeOptions(**values)


def _check_together(values: dict[str, Any]) -> None:
    """The rules that tie options to each other."""
    if values["password"] is not None and values["password_file"] is not None:
        raise ValueError("option password and password_file: give one, not both")
    if (values["password"] or values["password_file"]) and not values["username"]:
        raise ValueError("option password: needs username")
    if (values["cert"] is None) != (values["key"] is None):
        raise ValueError("option cert and key: give both or neither")
    if not values["url"].startswith("mqtts:") and any(values[name] for name in ("ca", "cert", "key")):
        raise ValueError("option ca, cert and key: only for an mqtts:// url")
    if values["discovery_prefix"] == values["base"]:
        raise ValueError("option base: must differ from discovery_prefix")
