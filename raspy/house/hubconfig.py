"""Configuration from the hub: what a satellite runs, as the hub's file says, kept in a cache.

The hub's file holds ``[hosts.NAME.executives.*]``; its executive ``config`` (kind ``configurator``)
serves each host's tables as ``<hub>.config.<host>`` and announces them under ``/config/<host>``
in the key/value map. A satellite whose file names the hub and no executive runs an executive
``config`` (kind ``hubconfig``) that watches that key, fetches its tables, checks them, writes
them here (the cache) and asks its supervisor to reload. The supervisor starts from the cache, so
a satellite that boots while the hub is away runs what it ran last (:func:`complete`).

The cache is one JSON file with a SHA-256 of its content: a damaged one is reported and never
used; the satellite then waits for the hub.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from raspy.atomic import atomic_write
from raspy.errors import RaspyError
from raspy.house.config import Config, ConfigError, ExecutiveConfig, parse_executives
from raspy.house.trust import CONFIG
from raspy.state.keys import join_key

log = logging.getLogger(__name__)

#: The cache, in the satellite's state directory.
CACHE_FILE = "hub-config.json"
#: Where the hub announces a host's configuration: ``/config/<host>``.
SUBTREE = "/config/"


class DamagedCache(RaspyError):
    """A cache file that cannot be trusted; the message says which and why."""


def cache_path(state_dir: Path) -> Path:
    return Path(state_dir) / CACHE_FILE


def announcement_key(host: str) -> str:
    """``/config/<host>``."""
    return join_key(SUBTREE, host)


def _digest(host: str, executives: dict[str, Any]) -> str:
    canonical = json.dumps({"host": host, "executives": executives}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_cache(state_dir: Path, host: str, executives: dict[str, Any]) -> None:
    """Keep ``executives`` (name -> table) as ``host``'s last good configuration, atomically and durably."""
    body = {"host": host, "fetched": time.strftime("%Y-%m-%d %H:%M:%S %z"), "executives": executives,
            "sha256": _digest(host, executives)}
    atomic_write(cache_path(state_dir), json.dumps(body, indent=1, sort_keys=True) + "\n")


def read_cache(state_dir: Path, host: str) -> dict[str, Any] | None:
    """The cached tables of ``host``; None when there is no cache; :class:`DamagedCache` when it cannot be trusted."""
    path = cache_path(state_dir)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedCache(f"{path}: damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("executives"), dict):
        raise DamagedCache(f"{path}: damaged (no table of executives)")
    if body.get("sha256") != _digest(body.get("host"), body["executives"]):
        raise DamagedCache(f"{path}: damaged (its content does not match its SHA-256)")
    if body.get("host") != host:
        raise DamagedCache(f"{path}: holds the configuration of host {body.get('host')!r}, this host is {host!r}")
    return body["executives"]


def executives_of(config: Config, tables: Any) -> dict[str, ExecutiveConfig]:
    """``tables`` checked as this satellite runs them (its kinds, their options): ConfigError naming the cache."""
    if isinstance(tables, dict) and CONFIG in tables:
        raise ConfigError(cache_path(config.state_dir), f"executives.{CONFIG}", "the name is this host's own")
    return parse_executives(config, tables, cache_path(config.state_dir))


def complete(config: Config) -> Config:
    """A satellite configured from the hub: its file's configuration, and the executives in the cache.

    What the supervisor runs, at start and at each reload. A cache that is missing, damaged or no
    longer valid here leaves the satellite with its ``config`` executive alone, which waits for the
    hub; the supervisor's log says which. Any other configuration is returned as it is.
    """
    if not config.from_hub:
        return config
    try:
        tables = read_cache(config.state_dir, config.hostname)
        executives = executives_of(config, tables) if tables is not None else {}
    except (DamagedCache, ConfigError) as exc:
        log.error("the cached configuration is not used: %s; waiting for the hub", exc)
        return config
    if tables is None:
        log.info("no configuration from the hub yet (%s): waiting for the hub", cache_path(config.state_dir))
    config.executives.update(executives)
    return config


__all__ = ["CACHE_FILE", "DamagedCache", "SUBTREE", "announcement_key", "cache_path", "complete", "executives_of",
           "read_cache", "write_cache"]
