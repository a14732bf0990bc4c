"""The checks of the ``mqtt`` executive's options, and the options as the bridge uses them.

The options themselves are declared once, on the executive
(:attr:`raspy.executives.mqtt.Mqtt.options`); the checks here run when the
configuration is read, so a mistake stops start-up naming the key and the
reason. :func:`bridge_options` then turns the table into
:class:`BridgeOptions`: the url with its port, files as paths (relative ones
in the state directory), import rules parsed, and the rules that tie options
to each other checked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from raspy.errors import InvalidValue
from raspy.mqtt.imports import ImportRule

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: ``auto``: MQTT 5, and 3.1.1 from the next attempt on when the broker refuses 5.
PROTOCOLS = ("auto", "5", "3.1.1")
#: Options that name files; a relative path is in the state directory.
FILES = ("password_file", "ca", "cert", "key")


def check_url(value: str) -> str:
    """``mqtt://HOST[:PORT]`` or ``mqtts://...``, with the port made explicit."""
    parts = urlsplit(value)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    if not parts.hostname or parts.username or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] (the login goes in username and password)")
    return f"{parts.scheme}://{parts.hostname}:{port or DEFAULT_PORTS[parts.scheme]}"


def check_patterns(value: list) -> tuple[str, ...]:
    """Device name patterns such as ``pi.fake.*``."""
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidValue(f"{item!r} is not a device name pattern such as \"pi.fake.*\"", index)
    return tuple(value)


def check_rules(value: list) -> tuple[ImportRule, ...]:
    """The import rules, each checked (the fault named by its index and key)."""
    rules = []
    for index, table in enumerate(value):
        try:
            rules.append(ImportRule.from_table(table))
        except InvalidValue as exc:
            raise exc.inside(index) from None
    return tuple(rules)


@dataclass(frozen=True)
class BridgeOptions:
    """The options as the bridge uses them."""

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
    imports: tuple[ImportRule, ...]
    max_payload: int
    max_imported: int
    max_topics: int

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


def bridge_options(values: Mapping[str, Any], state_dir: Path) -> BridgeOptions:
    """Every option (declared defaults filled in) as the bridge uses them; ``InvalidValue`` names the key."""
    files = {name: _readable(values[name], state_dir, name) for name in FILES}
    options = BridgeOptions(
        url=check_url(values["url"]), username=values["username"], password=values["password"],
        client_id=values["client_id"], protocol=values["protocol"], discovery_prefix=values["discovery_prefix"],
        base=values["base"], commands=check_patterns(values["commands"]), imports=check_rules(values["import"]),
        max_payload=values["max_payload"], max_imported=values["max_imported"], max_topics=values["max_topics"],
        **files)
    _check_together(options)
    return options


def _readable(value: str | None, state_dir: Path, name: str) -> Path | None:
    if value is None:
        return None
    path = Path(state_dir) / Path(value).expanduser()  # an absolute path stays as it is
    if not path.is_file() or not os.access(path, os.R_OK):
        raise InvalidValue(f"{str(path)!r} is not a readable file", name)
    return path


def _check_together(options: BridgeOptions) -> None:
    """The rules that tie options to each other."""
    if options.password is not None and options.password_file is not None:
        raise InvalidValue("give password or password_file, not both", "password_file")
    if (options.password or options.password_file) and not options.username:
        raise InvalidValue("a password needs a username", "password" if options.password else "password_file")
    if (options.cert is None) != (options.key is None):
        raise InvalidValue("give cert and key both, or neither", "cert" if options.cert is None else "key")
    for name in ("ca", "cert", "key"):
        if getattr(options, name) is not None and not options.tls:
            raise InvalidValue("only for an mqtts:// url", name)
    if options.discovery_prefix == options.base:
        raise InvalidValue(f"must differ from discovery_prefix ({options.discovery_prefix!r})", "base")
