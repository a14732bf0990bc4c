"""Scenarios: Python from files the owner put on the Pi, run by Core in their own threads.

A scenario has a name, ``conf`` (``active``, ``startup``, ``timeout``, ``file``,
``params``), ``entries`` (key/value keys it watches, each with a condition) and
code: a file defining ``run(ctx)``. A ``startup`` scenario runs in the
background from Core's start (a loop that checks ``ctx.stop_event``); the others
run when an entry's condition becomes true, from cron, or on request.

A failing scenario (exception, timeout) is logged and counted and never takes
Core down. A thread cannot be killed: one that ignores its stop event past its
timeout is abandoned (a daemon thread), counted and reported.

Code never comes over the network unless the configuration says
``allow_remote_code = true``. See docs/core.md.
"""
from __future__ import annotations

import logging
import math
import operator
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raspy.atomic import atomic_write
from raspy.automation.actions import Actions
from raspy.automation.store import Store, StoreError, stored
from raspy.errors import InvalidValue, RaspyError
from raspy.mdp import protocol as p
from raspy.mdp.service import Service, ServiceError, bad_request, not_found
from raspy.state.keys import SCENARIO, join_key

log = logging.getLogger(__name__)

#: Scenario files shipped with RasPy (examples), looked up after the owner's directory.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "scenarios"
#: Seconds a triggered scenario may run before it is asked to stop.
DEFAULT_TIMEOUT = 60.0
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
EVENT_OPS = ("change", "event")
CONF_DEFAULTS: dict[str, Any] = {"active": True, "startup": False, "timeout": None, "file": None, "params": {}}
#: Store sections and keys.
MAIN_SECTION, KEYS = "scenario.main", "keys"

_FILE = re.compile(r"[A-Za-z0-9_\-]+\.py\Z")
_MISSING = object()


def state_key(name: str, host: str = "") -> str:
    """Key/value key where a scenario's state is published: ``/scenario/<name>``, or
    ``/scenario/<host>.<name>`` for the Core of a satellite ``host``."""
    return join_key(SCENARIO, f"{host}.{name}" if host else name)


def section(name: str) -> str:
    return f"scenario.{name}"


# -- checking tables -------------------------------------------------------------------

def _addressable(name: str) -> bool:
    """Whether ``name`` can be a scenario's (and so a key's) name."""
    return bool(p.NAME.match(name)) and name != "main"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _addressable(name):
        raise InvalidValue("scenario name: letters, digits, '_' and '-' only (and not 'main')", "name")
    return name


def check_conf(conf: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``conf`` laid over ``base`` (or the defaults), checked; a bad one raises ValueError."""
    if not isinstance(conf, dict):
        raise InvalidValue("conf is a table")
    for key in conf:
        if key not in CONF_DEFAULTS:
            raise InvalidValue(f"unknown key {key!r}; known: name, entries, code, {', '.join(CONF_DEFAULTS)}", key)
    out = {**CONF_DEFAULTS, **(base or {}), **conf}
    for flag in ("active", "startup"):
        if not isinstance(out[flag], bool):
            raise InvalidValue(f"{flag} is true or false", flag)
    timeout = out["timeout"]
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise InvalidValue("timeout is a positive number of seconds, or none", "timeout")
    if out["file"] is not None and (not isinstance(out["file"], str) or not _FILE.match(out["file"])):
        raise InvalidValue("file is a bare file name ending in .py (no directories)", "file")
    if not isinstance(out["params"], dict):
        raise InvalidValue("params is a table", "params")
    return out


def check_entries(entries: Any) -> dict[str, dict[str, Any]]:
    """Entries ``{key: {"op": ..., "value": ...}}``, checked."""
    if not isinstance(entries, dict):
        raise InvalidValue("entries is a table of key -> condition", "entries")
    for key, cond in entries.items():
        if not isinstance(key, str) or not key.startswith("/"):
            raise InvalidValue(f"entry key {key!r} is a key/value key starting with '/'", "entries")
        if not isinstance(cond, dict) or cond.get("op") not in (*COMPARISONS, *EVENT_OPS):
            raise InvalidValue(f"entry {key}: condition is {{op: one of {[*COMPARISONS, *EVENT_OPS]}, value?}}",
                               "entries", key)
        if cond["op"] in COMPARISONS and "value" not in cond:
            raise InvalidValue(f"entry {key}: a comparison needs a value", "entries", key)
        if set(cond) - {"op", "value"}:
            raise InvalidValue(f"entry {key}: a condition has only op and value", "entries", key)
    return dict(entries)


def holds(cond: dict[str, Any], value: Any) -> bool:
    """Whether a comparison holds for ``value`` (a reading table counts by its ``value``)."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    try:
        return value is not None and bool(COMPARISONS[cond["op"]](value, cond["value"]))
    except TypeError:  # comparing unlike types: the condition does not hold
        return False


class Forbidden(RaspyError):
    """Code sent over the network while the configuration does not allow it (status 403)."""


# -- scenarios -----------------------------------------------------------------------------

class Context:
    """What ``run(ctx)`` gets: the entry that fired it, the Actions, a logger and its stop event."""

    def __init__(self, scenario: "Scenario", actions: Actions, entry: dict[str, Any] | None) -> None:
        self.name = scenario.name
        self.entry = entry
        self.params = dict(scenario.conf["params"])
        self.publish = actions.publish
        self.request = actions.request
        self.get = actions.get
        self.log = logging.getLogger(f"raspy.scenario.{scenario.name}")
        self.stop_event = scenario.stop_event

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the scenario is asked to stop."""
        return self.stop_event.wait(seconds)


@dataclass
class Scenario:
    """One scenario: its definition, and the state of its runs."""

    name: str
    conf: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    source: str = "runtime"  # or "config"
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    busy: bool = False  # from start until run(ctx) returns; stays true for an abandoned thread
    deadline: float | None = None
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    abandoned: bool = False
    last_run: float | None = None
    last_result: dict[str, Any] | None = None
    seen: dict[str, Any] = field(default_factory=dict)  # key -> last value, or whether a comparison held

    @property
    def running(self) -> bool:
        return self.busy

    @property
    def file(self) -> str:
        return self.conf["file"] or f"{self.name}.py"

    def satisfied(self, get: Callable[[str], Any]) -> bool:
        """Whether every comparison entry holds now (change/event entries are triggers only)."""
        return all(holds(cond, get(key)) for key, cond in self.entries.items() if cond["op"] in COMPARISONS)

    def fire(self, get: Callable[[str], Any]) -> bool:
        """Whether the scenario must run now: active, entries satisfied, not already running."""
        return self.conf["active"] and not self.running and self.satisfied(get)

    def triggered(self, key: str, value: Any) -> bool:
        """Whether an update of ``key`` makes its entry's condition become true."""
        cond = self.entries[key]
        if cond["op"] in COMPARISONS:
            now = holds(cond, value)
            was = self.seen.get(key, False)
            self.seen[key] = now
            return now and not was
        before = self.seen.get(key, _MISSING)
        self.seen[key] = value
        return cond["op"] == "event" or (before is not _MISSING and before != value)

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "conf": dict(self.conf), "entries": dict(self.entries)}

    def state(self) -> dict[str, Any]:
        return {"running": self.running, "active": self.conf["active"], "params": self.conf.get("params"),
                "last_run": self.last_run,
                "last_result": self.last_result, "runs": self.runs, "failures": self.failures,
                "timeouts": self.timeouts, "abandoned": self.abandoned}


def split_table(table: Any) -> tuple[str, dict[str, Any], dict[str, Any] | None, str | None]:
    """``(name, conf, entries, code)`` of a flat table ``{name, entries?, code?, <conf fields>}``."""
    if not isinstance(table, dict):
        raise ValueError("a scenario is a table {name, entries?, code?, active?, startup?, timeout?, file?, params?}")
    rest = dict(table)
    name = check_name(rest.pop("name", None))
    entries = rest.pop("entries", None)
    code = rest.pop("code", None)
    if code is not None and not isinstance(code, str):
        raise InvalidValue("code is the text of a Python file", "code")
    return name, rest, entries, code


# -- files, their code, and the check of params ------------------------------------------

def find_file(file: str, scenarios_dir: Path | None) -> Path:
    """A scenario's file: the owner's directory first, then the shipped examples."""
    for folder in (scenarios_dir, SHIPPED_DIR):
        if folder is not None and (folder / file).is_file():
            return folder / file
    raise FileNotFoundError(f"no scenario file {file} in {scenarios_dir} or {SHIPPED_DIR}")


def load_code(name: str, source: str, filename: str) -> dict[str, Any]:
    """The names a scenario's code defines (``run``, maybe ``check``), run as a module of its own."""
    namespace: dict[str, Any] = {"__name__": f"raspy.scenario.{name}", "__file__": filename}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def check_params(namespace: dict[str, Any], params: dict[str, Any]) -> None:
    """Call the code's ``check(params)`` if it defines one; what it raises says what is wrong with them."""
    check = namespace.get("check")
    if callable(check):
        check(dict(params))


def check_scenario(scenario: "Scenario", scenarios_dir: Path | None, code: str | None = None) -> None:
    """The scenario's code (its file, or ``code`` about to be written) loads and accepts its params.

    A refusal is an :class:`InvalidValue` under ``file`` or ``params``.
    """
    try:
        if code is None:
            path = find_file(scenario.file, scenarios_dir)
            code, filename = path.read_text(), str(path)
        else:
            filename = scenario.file
        namespace = load_code(scenario.name, code, filename)
    except FileNotFoundError as exc:
        raise InvalidValue(str(exc), "file") from None
    except Exception as exc:
        raise InvalidValue(f"{scenario.file} does not load: {type(exc).__name__}: {exc}", "file") from None
    if not callable(namespace.get("run")):
        raise InvalidValue(f"{scenario.file} defines no run(ctx)", "file")
    try:
        check_params(namespace, scenario.conf["params"])
    except InvalidValue as exc:
        raise exc.inside("params") from None
    except ValueError as exc:
        raise InvalidValue(str(exc), "params") from None
    except Exception as exc:
        raise InvalidValue(f"check(params) failed: {type(exc).__name__}: {exc}", "params") from None


def check_config(tables: Any, scenarios_dir: Path | None) -> None:
    """The scenarios of a configuration, as Core will add them, and no name twice; a refusal names the entry."""
    if not isinstance(tables, list):
        raise InvalidValue("scenarios is a list of tables")
    names: dict[str, int] = {}
    for index, table in enumerate(tables):
        try:
            if isinstance(table, dict) and "code" in table:
                raise InvalidValue("a configured scenario names its file; code belongs in that file", "code")
            name, conf, entries, _ = split_table(table)
            check_scenario(Scenario(name, check_conf(conf), check_entries(entries or {})), scenarios_dir)
        except InvalidValue as exc:
            raise exc.inside(index) from None
        if name in names:
            raise InvalidValue(f"scenarios[{names[name]}] has the name {name!r} too", index, "name")
        names[name] = index


class ScenarioManager:
    """The scenarios of one Core: definitions, files, runs, triggers, storage."""

    def __init__(self, actions: Actions, store: Store | None = None, scenarios_dir: Path | None = None,
                 allow_remote_code: bool = False, default_timeout: float = DEFAULT_TIMEOUT,
                 stop_grace: float = 2.0, host: str = "") -> None:
        self.actions = actions
        self.store = store
        self.scenarios_dir = scenarios_dir
        self.allow_remote_code = allow_remote_code
        self.default_timeout = default_timeout
        self.host = host  # a satellite's name for its state keys (state_key); '' on the hub
        self.stop_grace = stop_grace
        self.scenarios: dict[str, Scenario] = {}
        self.abandoned: list[str] = []
        #: stored entries skipped at loading: name (or repr of a non-string) -> why
        self.ignored: dict[str, str] = {}
        #: False until the store was read: writing the list of names before would drop stored ones
        self.loaded = store is None
        self._lock = threading.RLock()

    # -- files ---------------------------------------------------------------------------

    def path_of(self, scenario: Scenario) -> Path:
        """The scenario's file (see :func:`find_file`)."""
        return find_file(scenario.file, self.scenarios_dir)

    def _write_code(self, file: str, code: str) -> None:
        """Write remote code (only when allowed) to the owner's directory, atomically."""
        if self.scenarios_dir is None:
            raise ValueError("no scenarios directory to write code to")
        atomic_write(self.scenarios_dir / file, code)

    def _check_code(self, code: str | None, file: str) -> None:
        if code is None:
            return
        if not self.allow_remote_code:
            raise Forbidden("adding code over the network is off: the owner puts scenario "
                                            "files on the Pi, or sets allow_remote_code = true")
        try:
            compile(code, file, "exec")
        except SyntaxError as exc:
            raise ValueError(f"code does not compile: {exc}") from None

    # -- definitions -------------------------------------------------------------------------

    def all(self) -> list[Scenario]:
        """Every scenario, by name (a copy: the service threads must not see the dict change)."""
        with self._lock:
            return [scenario for _, scenario in sorted(self.scenarios.items())]

    def get(self, name: Any) -> Scenario:
        scenario = self.scenarios.get(name) if isinstance(name, str) else None
        if scenario is None:
            why = f" (its stored entry is ignored: {self.ignored[name]})" if name in self.ignored else ""
            raise KeyError(f"no scenario {name!r}{why}")
        return scenario

    def add(self, table: Any, source: str = "runtime", persist: bool = True) -> Scenario:
        """Add a scenario from a flat table; its file must exist unless code comes with it."""
        name, conf, entries, code = split_table(table)
        with self._lock:
            if name in self.scenarios:
                raise ValueError(f"scenario {name!r} exists; update or delete it")
            scenario = Scenario(name, check_conf(conf), check_entries(entries or {}), source)
            self._check_code(code, scenario.file)
            check_scenario(scenario, self.scenarios_dir, code)
            if persist:
                self._save(scenario, with_keys=self._stored_names(name))
            if code is not None:
                self._write_code(scenario.file, code)
            self.scenarios[name] = scenario
            self._publish(scenario)
            log.info("scenario %s added (%s)", name, source)
            return scenario

    def update(self, table: Any) -> Scenario:
        """Change conf fields, entries or (if allowed) code of a scenario; the rest stays."""
        name, conf, entries, code = split_table(table)
        with self._lock:
            scenario = self.get(name)
            new_conf = check_conf(conf, scenario.conf)
            new_entries = scenario.entries if entries is None else check_entries(entries)
            candidate = Scenario(name, new_conf, new_entries)
            self._check_code(code, candidate.file)
            check_scenario(candidate, self.scenarios_dir, code)
            self._save(candidate)
            if code is not None:
                self._write_code(candidate.file, code)
            return self._apply(scenario, new_conf, new_entries)

    def _apply(self, scenario: Scenario, conf: dict[str, Any], entries: dict[str, dict[str, Any]]) -> Scenario:
        was_active = scenario.conf["active"]
        if entries != scenario.entries:
            scenario.seen.clear()
        scenario.conf, scenario.entries, scenario.source = conf, entries, "runtime"
        if was_active and not conf["active"]:
            scenario.stop_event.set()
        elif conf["active"] and not was_active and conf["startup"] and scenario.fire(self.actions.get):
            self.start(scenario, None)
        self._publish(scenario)
        return scenario

    def set_active(self, name: str, active: bool) -> Scenario:
        """Enable or disable; disabling stops a running scenario, enabling starts a startup one."""
        with self._lock:
            scenario = self.get(name)
            conf = {**scenario.conf, "active": active}
            self._save(Scenario(name, conf, scenario.entries))
            return self._apply(scenario, conf, scenario.entries)

    def delete(self, name: str) -> None:
        """Delete a scenario, or the stored entry of an ignored one."""
        with self._lock:
            scenario = None if name in self.ignored and name not in self.scenarios else self.get(name)
            if self.store is not None:
                self._check_loaded()
                self.store.set(MAIN_SECTION, KEYS, [n for n in self._stored_names() if n != name])
                for key in ("conf", "entries"):
                    self.store.delete(section(name), key)
            self.ignored.pop(name, None)
            if scenario is not None:
                scenario.stop_event.set()
                del self.scenarios[name]

    def load_config(self, tables: list[Any]) -> None:
        """Scenarios of the configuration file, checked (:func:`check_config`) when it was loaded.

        One whose file was removed or changed since is logged and left out: Core runs the others.
        """
        for table in tables:
            try:
                check_config([table], self.scenarios_dir)
                self.add(table, source="config", persist=False)
            except ValueError as exc:
                name = table.get("name") if isinstance(table, dict) else table
                log.error("configured scenario %s left out: %s", name, exc)

    # -- the store --------------------------------------------------------------------------

    def _save(self, scenario: Scenario, with_keys: list[str] | None = None) -> None:
        if self.store is None:
            return
        self.store.set(section(scenario.name), "conf", scenario.conf)
        self.store.set(section(scenario.name), "entries", scenario.entries)
        if with_keys is not None:
            self._check_loaded()
            self.store.set(MAIN_SECTION, KEYS, with_keys)

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise StoreError("scenarios not loaded from the store yet (is Titanic running?); try again")

    def store_all(self) -> int:
        """Write every scenario's conf and entries, and the list of names."""
        with self._lock:
            self._check_loaded()
            for scenario in self.scenarios.values():
                self._save(scenario)
            if self.store is not None:
                self.store.set(MAIN_SECTION, KEYS, self._stored_names())
            return len(self.scenarios)

    def load_store(self) -> int:
        """Stored conf and entries override the configuration's; stored-only scenarios are added; how many loaded.

        Any client can write Titanic's store, so what it holds is checked like
        any input: an entry that does not pass is skipped, logged and kept in
        :attr:`ignored` (published under ``/scenario/<name>``) until deleted.
        Only a store that does not answer stops the loading (to be retried).
        """
        if self.store is None:
            return 0
        names = self.store.get(MAIN_SECTION, KEYS) or []
        with self._lock:
            self.ignored.clear()
            if not isinstance(names, list):
                self._ignore(MAIN_SECTION, ValueError(f"the list of names is a {type(names).__name__}"))
                names = []
            loaded = 0
            for name in names:
                try:
                    self._load_stored(name)
                    loaded += 1
                except StoreError:
                    raise
                except Exception as exc:  # whatever the content, the rest loads and Core keeps serving
                    self._ignore(name, exc)
            self.loaded = True
        return loaded

    def _load_stored(self, name: Any) -> None:
        check_name(name)
        conf, entries = (self.store.get(section(name), key) for key in ("conf", "entries"))
        if isinstance(conf, dict) and "code" in conf:
            raise Forbidden("the stored conf carries code: code comes only from files on the Pi")
        known = self.scenarios.get(name)
        conf = check_conf(conf or {}, known.conf if known else None)
        entries = check_entries(entries or {})
        if known is None:
            self.add({"name": name, **conf, "entries": entries}, persist=False)
        else:
            check_scenario(Scenario(name, conf, entries), self.scenarios_dir)
            self._apply(known, conf, entries)

    def _ignore(self, name: Any, exc: Exception) -> None:
        label = name if isinstance(name, str) else f"({type(name).__name__} {name!r})"
        reason = str(exc) if isinstance(exc, (RaspyError, ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
        self.ignored[label] = reason
        log.error("stored scenario %s ignored: %s", label, reason)
        if label in self.scenarios:
            self._publish(self.scenarios[label])
        elif _addressable(label):
            self._publish_state(label, {"ignored": reason})

    def _stored_names(self, *more: str) -> list[str]:
        """The store's list of names: the scenarios, and ignored entries until they are deleted."""
        return sorted({*self.scenarios, *filter(_addressable, self.ignored), *more})

    # -- runs ---------------------------------------------------------------------------------

    def fire(self, name: str, entry: dict[str, Any] | None = None) -> bool:
        """Start a scenario if it must run (see :meth:`Scenario.fire`); whether it started."""
        with self._lock:
            scenario = self.get(name)
            if not scenario.fire(self.actions.get):
                return False
            self.start(scenario, entry)
            return True

    def on_update(self, key: str, value: Any) -> list[str]:
        """A key/value update: fire the scenarios whose entry on ``key`` became true."""
        started = []
        with self._lock:
            for scenario in list(self.scenarios.values()):
                if key in scenario.entries and scenario.triggered(key, value):
                    if self.fire(scenario.name, {"key": key, "value": value}):
                        started.append(scenario.name)
        return started

    def prime(self, items: list[tuple[str, Any]]) -> None:
        """Values already there at start: remembered, so only later changes trigger."""
        with self._lock:
            for key, value in items:
                for scenario in self.scenarios.values():
                    if key in scenario.entries:
                        scenario.triggered(key, value)

    def start_startup(self) -> list[str]:
        """Start the active startup scenarios (Core's start)."""
        with self._lock:
            names = [s.name for s in self.scenarios.values() if s.conf["startup"] and s.conf["active"]]
            for name in names:
                self.fire(name, None)
            return names

    def start(self, scenario: Scenario, entry: dict[str, Any] | None) -> None:
        """Run the scenario's file in a new thread, with a fresh stop event."""
        scenario.stop_event = threading.Event()
        context = Context(scenario, self.actions, entry)
        timeout = scenario.conf["timeout"] or (None if scenario.conf["startup"] else self.default_timeout)
        scenario.deadline = None if timeout is None else time.monotonic() + timeout
        scenario.runs += 1
        scenario.busy = True
        scenario.last_run = time.time()
        scenario.thread = threading.Thread(target=self._run, args=(scenario, context),
                                           name=f"scenario-{scenario.name}", daemon=True)
        scenario.thread.start()
        self._publish(scenario)

    def _run(self, scenario: Scenario, context: Context) -> None:
        """The scenario thread: load the file, call ``run(ctx)``, record the outcome."""
        try:
            path = self.path_of(scenario)
            namespace = load_code(scenario.name, path.read_text(), str(path))
            run = namespace.get("run")
            if not callable(run):
                raise TypeError(f"{path} defines no run(ctx)")
            check_params(namespace, context.params)
            scenario.last_result = {"ok": True, "value": _plain(run(context))}
        except (Exception, SystemExit) as exc:
            scenario.failures += 1
            scenario.last_result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            log.exception("scenario %s failed", scenario.name)
        finally:
            scenario.deadline = None
            scenario.busy = False
            self._publish(scenario)

    def check_timeouts(self, now: float | None = None) -> list[str]:
        """Ask scenarios past their timeout to stop; abandon those still running after the grace."""
        now = time.monotonic() if now is None else now
        late = []
        with self._lock:
            for scenario in self.scenarios.values():
                if scenario.deadline is None or now < scenario.deadline or not scenario.running:
                    continue
                if not scenario.stop_event.is_set():
                    scenario.stop_event.set()
                    scenario.timeouts += 1
                    scenario.deadline = now + self.stop_grace
                    log.warning("scenario %s timed out; asked it to stop", scenario.name)
                else:
                    self._abandon(scenario)
                late.append(scenario.name)
                self._publish(scenario)
        return late

    def _abandon(self, scenario: Scenario) -> None:
        scenario.deadline = None
        scenario.abandoned = True
        self.abandoned.append(scenario.name)
        log.error("scenario %s ignores its stop event: abandoned as a daemon thread", scenario.name)

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Stop every running scenario within ``timeout`` in all; the names of those abandoned."""
        deadline = time.monotonic() + timeout
        running = [s for s in self.scenarios.values() if s.running]
        for scenario in running:
            scenario.stop_event.set()
        left = [s.name for s in running if s.abandoned]
        for scenario in running:
            if not scenario.abandoned and scenario.thread is not None:
                scenario.thread.join(max(0.0, deadline - time.monotonic()))
                if scenario.thread.is_alive():
                    self._abandon(scenario)
                    left.append(scenario.name)
        return sorted(left)

    def _publish(self, scenario: Scenario) -> None:
        state = scenario.state()
        if scenario.name in self.ignored:  # a configured scenario whose stored changes were ignored
            state["ignored"] = self.ignored[scenario.name]
        self._publish_state(scenario.name, state)

    def _publish_state(self, name: str, state: dict[str, Any]) -> None:
        """Publish ``/scenario/<name>``; a key/value failure is logged, never raised."""
        try:
            self.actions.publish(state_key(name, self.host), state)
        except Exception as exc:
            log.warning("cannot publish the state of scenario %s: %s", name, exc)


def _plain(value: Any) -> Any:
    """A run's result as something msgpack can carry (its repr otherwise)."""
    try:
        p.pack(value)
        return value
    except Exception:
        return repr(value)


# -- services -----------------------------------------------------------------------------

def _refusals(action: Callable[[], Any]) -> Any:
    """Run ``action`` with errors turned into service statuses."""
    try:
        with stored():
            return action()
    except KeyError as exc:
        raise not_found(exc.args[0]) from None
    except Forbidden as exc:
        raise ServiceError(p.FORBIDDEN, str(exc)) from None
    except (ValueError, FileNotFoundError) as exc:
        raise bad_request(str(exc)) from None


class ScenarioCollectionService(Service):
    """``<host>.core.scenarios``: the collection (list, add, update, delete, store, load)."""

    def __init__(self, manager: ScenarioManager) -> None:
        self.manager = manager

    def do_list_keys(self, args: Any) -> list[str]:
        return [s.name for s in self.manager.all()]

    def do_list(self, args: Any) -> list[dict[str, Any]]:
        return [s.definition() for s in self.manager.all()]

    def do_add(self, args: Any) -> dict[str, Any]:
        """args: ``{name, entries?, code?, active?, startup?, timeout?, file?, params?}``."""
        return _refusals(lambda: self.manager.add(args).definition())

    def do_update(self, args: Any) -> dict[str, Any]:
        """args: ``{name, <fields to change>}``."""
        return _refusals(lambda: self.manager.update(args).definition())

    def do_delete(self, args: Any) -> None:
        _refusals(lambda: self.manager.delete(args))

    def do_store(self, args: Any) -> int:
        return _refusals(self.manager.store_all)

    def do_load(self, args: Any) -> int:
        return _refusals(self.manager.load_store)


class ScenarioService(Service):
    """``<host>.core.scenario``: one scenario by name (info, enable, disable, fire)."""

    def __init__(self, manager: ScenarioManager) -> None:
        self.manager = manager

    def do_info(self, args: Any) -> dict[str, Any]:
        scenario = _refusals(lambda: self.manager.get(args))
        return {**scenario.definition(), "state": scenario.state(), "source": scenario.source}

    def do_enable(self, args: Any) -> dict[str, Any]:
        return _refusals(lambda: self.manager.set_active(args, True).state())

    def do_disable(self, args: Any) -> dict[str, Any]:
        return _refusals(lambda: self.manager.set_active(args, False).state())

    def do_fire(self, args: Any) -> bool:
        """args: a name; result: whether it started (false: inactive, unsatisfied or running)."""
        return _refusals(lambda: self.manager.fire(args, {"fired": "request"}))
