"""The supervisor's configuration: a TOML file, or the embedded default house.

A bad file stops start-up with the file, the key, its line and the reason
(:class:`ConfigError`); nothing is started from a half-understood file. A hub's file may also hold
``[hosts.NAME.executives.*]`` tables, each checked here as the host will run it; a satellite whose
file has no ``[executives.*]`` gets its executives from the hub (:mod:`raspy.house.hubconfig`).
"""
from __future__ import annotations

import os
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq

from raspy.curve import NAME as HOST_NAME
from raspy.curve import Curve, CurveError, check_key
from raspy.errors import InvalidValue, RaspyError
from raspy.house.executive import BEATS_PER_HANG, Settings, load_kind
from raspy.house.options import check_table
from raspy.house.toml_lines import find_line, find_value_line
from raspy.house.trust import CONFIG

#: The default house, in start order: executive name -> its options. An entry whose
#: kind is not (yet) in ``raspy.house.executive.KINDS`` is left out, so a new executive
#: joins the default house by registering its kind.
DEFAULT_HOUSE: dict[str, dict[str, Any]] = {
    "broker": {},
    "kv": {},
    "titanic": {},
    "core": {},
    "fake": {"devices": [  # something to watch on a house without hardware
        {"name": "aquarium", "kind": "cyclic", "cycle": 86400, "min": 24.0, "max": 27.0, "unit": "C", "poll": 10},
        {"name": "outside", "kind": "cyclic", "cycle": 86400, "min": 4.0, "max": 16.0, "unit": "C", "poll": 30},
        {"name": "heater", "kind": "switch", "poll": 30},
    ]},
    "web": {},
    "onewire": {},
    "history": {},
}

#: Executives of the default house that only make sense when this path exists.
NEEDS_PATH = {"onewire": Path("/sys/bus/w1/devices")}

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")

#: The kinds of the executive named ``config`` (:data:`CONFIG`): on a hub with ``[hosts.*]`` tables
#: it serves each host its configuration; on a satellite configured by the hub it fetches its own.
CONFIGURATOR, FROM_HUB = "configurator", "hubconfig"
#: What a value in a ``[hosts.*]`` table may be: what travels to the host and sits in its cache.
_PLAIN = (str, int, float, bool, list, dict)


class ConfigError(RaspyError, ValueError):
    """A configuration that cannot be used; the message names file, key, line and reason."""

    def __init__(self, path: Path | None, key: str, reason: str, line: int | None = None) -> None:
        where = str(path) if path else "<default configuration>"
        if line:
            where += f", line {line}"
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")
        self.path, self.key, self.line, self.reason = path, key, line, reason


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/raspy``, else ``~/.local/state/raspy``."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "raspy"


@dataclass(frozen=True)
class ExecutiveConfig:
    """One ``[executives.NAME]`` table."""

    name: str
    kind: str
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The ``[raspy]`` table (times in seconds) and the executives, in file order."""

    path: Path | None = None
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    state_dir: Path = field(default_factory=default_state_dir)
    broker: str = "tcp://127.0.0.1:5514"
    kv_snapshot: str = ""            # key/value endpoints; by default the broker's port + 1, + 2, + 3
    kv_publisher: str = ""
    kv_collector: str = ""
    heartbeat: float = 2.5
    liveness: int = 3
    backoff_start: float = 0.5       # delay before the second quick restart; doubles from there
    backoff_cap: float = 60.0        # longest delay between restarts
    backoff_reset: float = 30.0      # running this long counts as stable: back-off starts over
    give_up_after: int = 5           # quick exits in a row before the executive is given up
    gave_up_retry: float = 600.0     # a given-up executive is tried once more after this
    stop_timeout: float = 5.0        # SIGTERM, then SIGKILL after this
    hang_timeout: float = 15.0       # no heartbeat for this long: killed and restarted
    log_max_bytes: int = 1_000_000   # an executive's log is rotated at this size (one old file kept)
    python_path: list[Path] = field(default_factory=list)  # ``path``: folders of the house's own kinds
    curve: bool = False              # CURVE on every ZeroMQ connection (keys in <state_dir>/curve)
    hub_key: str = ""                # the hub's public key; empty: this host is the hub
    insecure: bool = False           # allow a plaintext bind to an address other than loopback
    host_interval: float = 2.0       # at most one summary of the board under /host/<hostname> this often
    host_refresh: float = 30.0       # the summary again after this long without a change (docs/hosts.md)
    security: Curve | None = None    # the keys, loaded by the commands that start executives
    executives: dict[str, ExecutiveConfig] = field(default_factory=dict)
    #: on a hub: ``[hosts.NAME.executives.*]``, each host's executives, checked as that host runs them
    hosts: dict[str, dict[str, ExecutiveConfig]] = field(default_factory=dict)
    #: a satellite whose file names the hub and no executive: the hub gives them (and a cache keeps them)
    from_hub: bool = False

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def enabled(self) -> list[ExecutiveConfig]:
        return [e for e in self.executives.values() if e.enabled]

    def load_security(self) -> Curve | None:
        """This host's CURVE keys when ``curve = true``; a :class:`ConfigError` says what to do without them."""
        if not self.curve:
            return None
        try:
            return Curve.load(self.state_dir, self.hostname, self.hub_key)
        except CurveError as exc:
            raise ConfigError(self.path, "raspy.curve", str(exc)) from None

    def secure_clients(self) -> None:
        """With ``curve = true``, make this process's sockets CURVE clients of the hub (a command's)."""
        security = self.load_security()
        if security is not None:
            security.client(zmq.Context.instance())

    def for_host(self, host: str, executives: dict[str, ExecutiveConfig]) -> "Config":
        """This configuration as host ``host`` would run ``executives``: what their checks see."""
        return replace(self, hostname=host, executives=executives, hosts={}, from_hub=False)

    def settings(self, name: str) -> Settings:
        """What the executive ``name`` is constructed with."""
        executive = self.executives[name]
        return Settings(name=name, hostname=self.hostname, broker=self.broker, state_dir=self.state_dir,
                        kv_snapshot=self.kv_snapshot, kv_publisher=self.kv_publisher, kv_collector=self.kv_collector,
                        kind=executive.kind, options=dict(executive.options),
                        heartbeat=self.heartbeat, liveness=self.liveness,
                        beat_interval=self.hang_timeout / BEATS_PER_HANG, curve=self.security)


#: ``[raspy]`` keys: name -> (accepted types, check of the value or None, what the check wants).
_POSITIVE = (lambda v: v > 0, "a number > 0")
_RASPY_KEYS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "hostname": ((str,), lambda v: bool(re.fullmatch(r"[A-Za-z0-9_-]+", v)), "letters, digits, '_' or '-'"),
    "state_dir": ((str,), bool, "a path"),
    "broker": ((str,), lambda v: bool(re.match(r"(tcp|ipc|inproc)://.", v)), "a ZeroMQ endpoint"),
    "kv_snapshot": ((str,), lambda v: bool(re.match(r"(tcp|ipc|inproc)://.", v)), "a ZeroMQ endpoint"),
    "kv_publisher": ((str,), lambda v: bool(re.match(r"(tcp|ipc|inproc)://.", v)), "a ZeroMQ endpoint"),
    "kv_collector": ((str,), lambda v: bool(re.match(r"(tcp|ipc|inproc)://.", v)), "a ZeroMQ endpoint"),
    "heartbeat": ((int, float), *_POSITIVE),
    "liveness": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "backoff_start": ((int, float), *_POSITIVE),
    "backoff_cap": ((int, float), *_POSITIVE),
    "backoff_reset": ((int, float), *_POSITIVE),
    "give_up_after": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "gave_up_retry": ((int, float), *_POSITIVE),
    "stop_timeout": ((int, float), *_POSITIVE),
    "hang_timeout": ((int, float), *_POSITIVE),
    "log_max_bytes": ((int,), lambda v: v >= 1024, "an integer >= 1024"),
    "path": ((list,), lambda v: all(isinstance(f, str) and f for f in v), "a list of folders"),
    "curve": ((bool,), None, "true or false"),
    "hub_key": ((str,), lambda v: v == "" or _is_key(v), "a CURVE public key (40 characters, 'raspy keys init')"),
    "insecure": ((bool,), None, "true or false"),
    "host_interval": ((int, float), *_POSITIVE),
    "host_refresh": ((int, float), *_POSITIVE),
}


def _is_key(text: str) -> bool:
    try:
        return bool(check_key(text))
    except CurveError:
        return False


def load_config(path: str | os.PathLike | None = None, import_kinds: bool = True) -> Config:
    """The configuration in ``path``, or the default house when ``path`` is None.

    ``import_kinds`` imports (and so checks) every executive's code, from the folders of
    ``[raspy] path`` too: what starts a house does; what only talks to one does not need it.
    """
    if path is None:
        return parse_config(default_document(), None, "", import_kinds)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else len(text.splitlines()) or None  # "at end of document"
        raise ConfigError(path, "", f"not valid TOML: {exc}", line) from None
    return parse_config(document, path, text, import_kinds)


def default_document() -> dict[str, Any]:
    """The default house as a parsed TOML document."""
    from raspy.house.executive import KINDS

    executives = {name: dict(options) for name, options in DEFAULT_HOUSE.items()
                  if name in KINDS and (name not in NEEDS_PATH or NEEDS_PATH[name].exists())}
    return {"raspy": {}, "executives": executives}


def parse_config(document: dict[str, Any], path: Path | None, text: str, import_kinds: bool = True) -> Config:
    """Check a parsed document and build the :class:`Config`."""

    def error(table: str, key: str | None, reason: str) -> ConfigError:
        return ConfigError(path, f"{table}.{key}" if key else table, reason, find_line(text, table, key))

    for table in document:
        if table not in ("raspy", "executives", "hosts"):
            raise error(table, None, "unknown table; RasPy reads [raspy], [executives.NAME] "
                                     "and [hosts.HOST.executives.NAME]")
    raspy = document.get("raspy", {})
    if not isinstance(raspy, dict):
        raise error("raspy", None, "must be a table")
    values: dict[str, Any] = {}
    for key, value in raspy.items():
        if key not in _RASPY_KEYS:
            raise error("raspy", key, f"unknown key; known: {', '.join(_RASPY_KEYS)}")
        types, check, wanted = _RASPY_KEYS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types) or (check and not check(value)):
            raise error("raspy", key, f"{value!r} is not {wanted}")
        values[key] = value
    if "state_dir" in values:
        values["state_dir"] = Path(values["state_dir"]).expanduser()
        if path is not None and not values["state_dir"].is_absolute():
            values["state_dir"] = path.parent / values["state_dir"]
    folders = [Path(f).expanduser() for f in values.pop("path", ["."] if path else [])]
    values["python_path"] = [path.parent.absolute() / f for f in folders] if path else folders
    config = Config(path=path, **values)
    for offset, key in enumerate(("kv_snapshot", "kv_publisher", "kv_collector"), 1):
        if not getattr(config, key):
            tcp = re.fullmatch(r"(tcp://[^:]+):(\d+)", config.broker)
            if tcp is None:
                raise error("raspy", key, f"needed when the broker ({config.broker}) is not tcp://HOST:PORT")
            setattr(config, key, f"{tcp.group(1)}:{int(tcp.group(2)) + offset}")
    if config.backoff_start > config.backoff_cap:
        raise error("raspy", "backoff_start", f"{config.backoff_start} is more than backoff_cap {config.backoff_cap}")
    if config.host_interval > config.host_refresh:
        raise error("raspy", "host_interval", f"{config.host_interval} is more than host_refresh {config.host_refresh}")
    executives = document.get("executives", {})
    if not isinstance(executives, dict):
        raise error("executives", None, "must be a set of [executives.NAME] tables")
    if import_kinds:
        sys.path.extend(str(f) for f in config.python_path if str(f) not in sys.path)
    for name, table in executives.items():
        config.executives[name] = _executive(config, name, table, error)
    config.from_hub = bool(config.hub_key) and config.curve and "executives" not in document and path is not None
    if config.from_hub:  # the executive that asks the hub; the others come from it, or from its cache
        config.executives[CONFIG] = ExecutiveConfig(CONFIG, FROM_HUB, True, {"file": str(Path(path).absolute())})
    _hosts(config, document.get("hosts"), text, error)
    if import_kinds:
        config.security = config.load_security()
        check_kinds(config, text)
        for host, executives in config.hosts.items():
            check_kinds(config.for_host(host, executives), text, f"hosts.{host}.executives")
    return config


def parse_executives(config: Config, tables: dict[str, Any], path: Path, text: str = "",
                     prefix: str = "executives") -> dict[str, ExecutiveConfig]:
    """``tables`` (name -> ``[executives.NAME]`` table, as parsed) checked as ``config``'s host runs them.

    For executives that come from elsewhere than ``config``'s file (the hub's answer, its cache
    in ``path``); a :class:`ConfigError` names ``path`` and the executive.
    """
    def error(table: str, key: str | None, reason: str) -> ConfigError:
        return ConfigError(path, f"{table}.{key}" if key else table, reason, find_line(text, table, key))

    if not isinstance(tables, dict):
        raise error(prefix, None, "must be a set of executive tables")
    executives = {name: _executive(config, name, table, error, prefix) for name, table in tables.items()}
    check_kinds(config.for_host(config.hostname, executives), text, prefix, path)
    return executives


def executive_table(executive: ExecutiveConfig) -> dict[str, Any]:
    """The ``[executives.NAME]`` table that :func:`parse_executives` reads back as ``executive``."""
    return {"kind": executive.kind, "enabled": executive.enabled, **executive.options}


def _hosts(config: Config, hosts: Any, text: str, error) -> None:
    """``[hosts.HOST.executives.NAME]``: what the hub gives each host; the hub runs ``config`` to serve it."""
    if hosts is None:
        return
    if not isinstance(hosts, dict):
        raise error("hosts", None, "must be a set of [hosts.HOST.executives.NAME] tables")
    if config.hub_key:
        raise error("hosts", None, "a satellite (it names hub_key) serves no [hosts.*]: they belong in the hub's file")
    if not config.curve:
        raise error("hosts", None, "needs curve = true: the hub tells which host asks for its configuration "
                                   "by the host's CURVE key (docs/hosts.md)")
    if CONFIG in config.executives:
        raise error(f"executives.{CONFIG}", None, f"the name {CONFIG!r} is the hub's configuration service's "
                                                  "when the file has [hosts.*] tables")
    for host, table in hosts.items():
        where = f"hosts.{host}"
        if not HOST_NAME.match(host):
            raise error(where, None, "a host name is 1-64 letters, digits, '_' or '-' (its name on the allow-list)")
        if host == config.hostname:
            raise error(where, None, "the hub's own executives go in [executives.*]")
        if not isinstance(table, dict) or any(key != "executives" for key in table):
            raise error(where, None, "holds only [hosts.HOST.executives.NAME] tables")
        executives = table.get("executives", {})
        if not isinstance(executives, dict):
            raise error(f"{where}.executives", None, "must be a set of [hosts.HOST.executives.NAME] tables")
        config.hosts[host] = {}
        for name, options in executives.items():
            prefix = f"{where}.executives"
            if name == CONFIG:
                raise error(f"{prefix}.{name}", None, f"the name {CONFIG!r} is the host's own: "
                                                      "it fetches the configuration from the hub")
            table_name = f"{prefix}.{name}"
            found = _not_plain(options)
            if found is not None:
                raise ConfigError(config.path, table_name + _path(found), "a date or time is not sent to a host: "
                                  "write it as a string", find_value_line(text, table_name, found))
            config.hosts[host][name] = _executive(config, name, options, error, prefix)
    tables = {host: {name: executive_table(e) for name, e in executives.items()}
              for host, executives in config.hosts.items()}
    config.executives[CONFIG] = ExecutiveConfig(CONFIG, CONFIGURATOR, True, {"hosts": tables})


def _not_plain(value: Any, where: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where ``value`` holds something that cannot travel to a host as it is (TOML's dates and times)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _not_plain(item, (*where, key))
        if found is not None:
            return found
    return None if isinstance(value, _PLAIN) else where


def _executive(config: Config, name: str, table: Any, error, prefix: str = "executives") -> ExecutiveConfig:
    where = f"{prefix}.{name}"
    if not _NAME.match(name):
        raise error(where, None, "an executive name is 1-32 lower-case letters, digits, '_' or '-', "
                                 "starting with a letter")
    if not isinstance(table, dict):
        raise error(where, None, "must be a table")
    options = dict(table)
    kind = options.pop("kind", name)
    enabled = options.pop("enabled", True)
    if not isinstance(kind, str) or not kind:
        raise error(where, "kind", f"{kind!r} is not a kind name or 'module:Class'")
    if not isinstance(enabled, bool):
        raise error(where, "enabled", f"{enabled!r} is not true or false")
    if kind == "broker":
        options.setdefault("bind", config.broker)
    return ExecutiveConfig(name, kind, enabled, options)


def check_kinds(config: Config, text: str, prefix: str = "executives", path: Path | None = None) -> None:
    """Import each executive's kind and check its options as the kind declares them.

    ``prefix`` is where the tables sit in ``text`` (``hosts.shed.executives`` for a host's on the
    hub), ``path`` the file an error names (default the configuration's).

    What ``start``, ``reload`` and ``run`` need; a command that only talks to a running house
    can skip it (and so never imports a kind of the owner's). Imported now, a kind's code is
    also in memory before the fork: the children share its pages.
    """
    path = path or config.path
    for name, executive in config.executives.items():
        table = f"{prefix}.{name}"
        try:
            cls = load_kind(executive.kind)
        except ValueError as exc:
            raise ConfigError(path, f"{table}.kind", str(exc), find_line(text, table, "kind")) from None
        if cls.secured and executive.enabled and not (config.curve or config.insecure):
            plain = [e for e in cls.endpoints(config.settings(name)) if not loopback(e)]
            if plain:
                raise ConfigError(path, "raspy.curve",
                                  f"executive {name} would bind {plain[0]} in plaintext: set curve = true "
                                  "(docs/hosts.md), or insecure = true to accept it", find_line(text, "raspy", "curve"))
        try:
            check_table(cls.options, executive.options, fixed=("kind", "enabled"))
            cls.check_options(config.settings(name))
        except ValueError as exc:
            where = exc.where if isinstance(exc, InvalidValue) else ()
            line = find_value_line(text, table, where)
            raise ConfigError(path, table + _path(where), str(exc), line) from None


def loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this machine: ipc://, inproc://, or tcp:// on a loopback address."""
    found = re.fullmatch(r"tcp://(\[[^\]]*\]|[^:/]*):.*", endpoint)
    if found is None:
        return True
    host = found.group(1).strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _path(where: tuple[str | int, ...]) -> str:
    """``("devices", 1, "cycle")`` as ``.devices[1].cycle``; a key that is not bare in TOML is quoted."""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" if re.fullmatch(r"[A-Za-z0-9_-]+", step)
                   else f'."{step}"' for step in where)


__all__ = ["CONFIGURATOR", "Config", "ConfigError", "ExecutiveConfig", "DEFAULT_HOUSE", "FROM_HUB", "check_kinds",
           "default_state_dir", "executive_table", "find_line", "load_config", "parse_config", "parse_executives"]
