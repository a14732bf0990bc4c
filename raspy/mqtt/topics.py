"""The bridge's topic layout, in one place (docs/mqtt.md shows it as a table).

=============================================  =========================================
``<base>/<host>/status``                       ``online`` (retained), ``offline`` (last will)
``<base>/<host>/<device>/state``               the value, plain (retained)
``<base>/<host>/<device>/attributes``          ``{value, unit, timestamp}`` as JSON (retained)
``<base>/<host>/<device>/set``                 commands to switches and dimmers
``<prefix>/<component>/<host>_<device>/config``  Home Assistant discovery (retained)
``<prefix>/status``                            Home Assistant's own ``online``/``offline``
=============================================  =========================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Home Assistant components the bridge announces devices as.
COMPONENTS = ("sensor", "binary_sensor", "switch", "light")


def check_prefix(value: Any) -> str:
    """A topic prefix such as ``raspy`` or ``home/raspy``: no wildcard, no empty level."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a topic prefix such as \"raspy\"")
    if any(level in ("", "+", "#") or "+" in level or "#" in level for level in value.split("/")) or "\0" in value:
        raise ValueError(f"{value!r} is not a topic prefix: no wildcards (+, #), no empty levels")
    return value


@dataclass(frozen=True)
class Topics:
    """Where the bridge publishes and listens, for one ``base`` and discovery ``prefix``."""

    base: str = "raspy"
    prefix: str = "homeassistant"

    def status(self, host: str) -> str:
        return f"{self.base}/{host}/status"

    def state(self, host: str, device: str) -> str:
        return f"{self.base}/{host}/{device}/state"

    def attributes(self, host: str, device: str) -> str:
        return f"{self.base}/{host}/{device}/attributes"

    def command(self, host: str, device: str) -> str:
        return f"{self.base}/{host}/{device}/set"

    def config(self, component: str, host: str, device: str) -> str:
        return f"{self.prefix}/{component}/{host}_{device}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def commands(self) -> str:
        """The filter every command topic matches."""
        return f"{self.base}/+/+/set"

    def announced(self, host: str) -> str:
        """The filter of one host's attribute topics: what an earlier run left retained."""
        return f"{self.base}/{host}/+/attributes"

    def device_of(self, topic: str, suffix: str) -> tuple[str, str] | None:
        """``(host, device)`` of ``<base>/<host>/<device>/<suffix>``, or None for any other topic."""
        head = f"{self.base}/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head):].split("/")
        if len(levels) != 3 or levels[2] != suffix or not levels[0] or not levels[1]:
            return None
        return levels[0], levels[1]
