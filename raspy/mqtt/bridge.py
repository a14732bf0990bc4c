"""RasPy's devices on MQTT: readings to retained topics, Home Assistant discovery, commands back.

:class:`Bridge` turns each ``/device/<host>.<server>.<device>`` update of the
key/value map into the device's retained state and attributes, announces the
device to Home Assistant once its ``config`` has told its kind, clears all of
it when the device goes, and turns a payload on a device's ``set`` topic into
a ``set`` request. :class:`Requests` sends those requests (and the ``config``
look-ups) through the RasPy broker from a thread of its own, so neither
paho's network thread nor the key/value thread ever waits for a device.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from raspy.droplog import DropLog
from raspy.errors import RequestTimeout
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mqtt.discovery import COMMANDED, Kind, attributes_payload, classify, command_value, config_payload, \
    oid_of, state_payload
from raspy.mqtt.outbox import Outbox
from raspy.mqtt.topics import COMPONENTS, Topics
from raspy.state import keys

log = logging.getLogger(__name__)

#: Commands from MQTT waiting for the RasPy broker; beyond it a command is dropped.
COMMAND_QUEUE = 32
#: Seconds a ``set`` or ``config`` request waits for the device's server.
REQUEST_TIMEOUT = 2.5
#: Topics a device holds: state, attributes, discovery config.
TOPICS_PER_DEVICE = 3
#: Seconds before a ``config`` that got no answer (its server not up yet) is asked again.
ASK_AGAIN = 30.0


@dataclass
class Exported:
    """A RasPy device as the bridge shows it."""

    host: str
    server: str
    name: str
    reading: dict[str, Any]
    oid: str | None = None
    kind: Kind | None = None  # None until announced
    ask_again: float | None = None  # monotonic time after which an unanswered ``config`` is asked again

    @property
    def fullname(self) -> str:
        return f"{self.host}.{self.server}.{self.name}"

    @property
    def service(self) -> str:
        return f"{self.host}.{self.server}.devices"


@dataclass
class BridgeCounts:
    """What the bridge did, for the executive's statistics."""

    readings: int = 0
    commands: int = 0
    command_errors: int = 0
    removed: int = 0  # devices gone whose topics were cleared (also those gone since an earlier run)


class Bridge:
    """The RasPy -> MQTT side and the commands that come back; every method is safe from any thread."""

    def __init__(self, topics: Topics, outbox: Outbox, wake: Callable[[], None], hostname: str, own_server: str,
                 commands: Iterable[str], drop: DropLog, broker: str, max_payload: int) -> None:
        self.topics = topics
        self.outbox = outbox
        self.wake = wake
        self.hostname = hostname
        self.own_server = own_server
        self.patterns = tuple(commands)
        self.drop = drop
        self.max_payload = max_payload
        self.requests = Requests(broker, self)
        self.counts = BridgeCounts()
        self.devices: dict[str, Exported] = {}
        self._topic_owner: dict[tuple[str, str], str] = {}  # (host, device) -> full name
        self._earlier: set[str] = set()  # devices an earlier run left retained, to check once synced
        self._lock = threading.Lock()
        self.online = False

    def ready(self, snapshot: Iterable[tuple[str, bytes]]) -> None:
        """The key/value map is in sync: take any device of ``snapshot`` not seen yet, then say ``online``.

        Until then Home Assistant sees ``offline`` (the last will, or nothing), so no command
        arrives for a device the bridge does not know yet.
        """
        for key, body in snapshot:
            if keys.name_in(keys.DEVICE, key) not in self.devices:
                self.reading(key, body)
        self._put(self.topics.status(self.hostname), "online")
        self.online = True
        self.wake()

    # -- the key/value side --

    def reading(self, key: str, body: bytes | None, properties: dict | None = None) -> None:
        """A ``/device/`` update (the key/value subscriber's callback); ``None`` means the device is gone."""
        fullname = keys.name_in(keys.DEVICE, key)
        parts = fullname.split(".")
        if len(parts) != 3 or not all(p.NAME.match(part) for part in parts):
            self.drop(f"key/value key {key!r} is not /device/<host>.<server>.<device>")
            return
        host, server, name = parts
        if host == self.hostname and server == self.own_server:
            return  # imported from MQTT: shown there already
        with self._lock:
            if body is None:
                self._remove(fullname)
                return
            try:
                reading = p.unpack_map(body)
            except p.ProtocolError:
                reading = {}
            if "value" not in reading:
                self.drop(f"{key}: not a reading map {{value, unit, timestamp}}")
                return
            device = self.devices.get(fullname) or self._add(host, server, name, reading)
            if device is None:
                return
            if device.ask_again is not None and time.monotonic() >= device.ask_again:
                device.ask_again = None
                self.requests.describe(device)
            device.reading = reading
            self.counts.readings += 1
            self._publish_state(device)
        self.wake()

    def _add(self, host: str, server: str, name: str, reading: dict) -> Exported | None:
        owner = self._topic_owner.get((host, name))
        fullname = f"{host}.{server}.{name}"
        if owner is not None:
            self.drop(f"{fullname}: its topics are {owner}'s (device names must differ across servers)")
            return None
        if not self.outbox.room(TOPICS_PER_DEVICE):
            self.drop(f"{fullname}: not bridged, the bridge holds max_topics ({self.outbox.limit}) topics")
            return None
        device = Exported(host, server, name, reading)
        self.devices[fullname] = device
        self._topic_owner[(host, name)] = fullname
        self.requests.describe(device)
        return device

    def _remove(self, fullname: str) -> None:
        device = self.devices.pop(fullname, None)
        if device is None:
            return
        del self._topic_owner[(device.host, device.name)]
        self.counts.removed += 1
        self._clear(device.host, device.name, [device.kind.component] if device.kind else COMPONENTS)

    def _clear(self, host: str, name: str, components: Iterable[str]) -> None:
        """Empty retained payloads: Home Assistant drops the entity, and nothing of it stays retained."""
        topics = [self.topics.config(component, host, name) for component in components]
        for topic in [*topics, self.topics.state(host, name), self.topics.attributes(host, name)]:
            if not self.outbox.put(topic, b""):
                self.drop(f"{topic}: not cleared, the bridge holds max_topics ({self.outbox.limit}) topics")

    def _publish_state(self, device: Exported) -> None:
        component = device.kind.component if device.kind else None
        self._put(self.topics.state(device.host, device.name), state_payload(component, device.reading["value"]))
        self._put(self.topics.attributes(device.host, device.name), attributes_payload(device.reading))

    def _put(self, topic: str, text: str) -> None:
        payload = text.encode()
        if not payload:
            payload = b"None"  # an empty payload would clear the topic
        if len(payload) > self.max_payload:
            self.drop(f"{topic}: not published, {len(payload)} bytes (max_payload {self.max_payload})")
        elif not self.outbox.put(topic, payload):
            self.drop(f"{topic}: not published, the bridge holds max_topics ({self.outbox.limit}) topics")

    # -- Home Assistant discovery --

    def described(self, fullname: str, config: Any, answered: bool = True) -> None:
        """The device's ``config`` (or None when its server did not say): announce it.

        Unanswered (its server is not up yet, as after a restart of the house, when the key/value
        map already holds its readings), it is announced by its reading and asked again later.
        """
        with self._lock:
            device = self.devices.get(fullname)
            if device is None:
                return
            device.ask_again = None if answered else time.monotonic() + ASK_AGAIN
            device.oid = oid_of(config)
            self._announce(device)
        self.wake()

    def _announce(self, device: Exported) -> None:
        kind = classify(device.oid, device.reading["value"], self._takes_commands(device.fullname))
        if device.kind is not None and device.kind.component != kind.component:
            self.outbox.put(self.topics.config(device.kind.component, device.host, device.name), b"")
        device.kind = kind
        config = config_payload(self.topics, self.topics.status(self.hostname), device.host, device.name, kind,
                                device.reading.get("unit"), device.reading["value"])
        self._put(self.topics.config(kind.component, device.host, device.name), json.dumps(config))
        self._publish_state(device)

    def _takes_commands(self, fullname: str) -> bool:
        return any(fnmatch.fnmatchcase(fullname, pattern) for pattern in self.patterns)

    def home_assistant(self, topic: str, payload: bytes, retained: bool) -> None:
        """Home Assistant's status: at ``online`` (it started) everything is announced again."""
        if payload.strip() == b"online":
            log.info("Home Assistant is online: announcing %d devices again", len(self.devices))
            self.outbox.resend_all()
            self.wake()

    # -- commands --

    def command(self, topic: str, payload: bytes, retained: bool) -> None:
        """A payload on ``<base>/<host>/<device>/set``: the device's ``set`` request, when it takes commands."""
        where = self.topics.device_of(topic, "set")
        if where is None:
            self.drop(f"command on {topic!r}: not <base>/<host>/<device>/set")
            return
        if retained:
            self.drop(f"retained command on {topic} ignored: a command acts once, not at every connection")
            return
        with self._lock:
            fullname = self._topic_owner.get(where)
            device = self.devices.get(fullname) if fullname else None
        if device is None:
            self.drop(f"command for {where[0]}/{where[1]}: no such device")
            return
        if device.kind is None or device.kind.component not in COMMANDED:
            self.drop(f"command for {fullname}: it takes no commands from MQTT")
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self.drop(f"command for {fullname}: payload is not UTF-8")
            return
        if not self.requests.set(device, command_value(device.kind.component, text)):
            self.drop(f"command for {fullname} dropped: {COMMAND_QUEUE} commands wait already")

    def confirmed(self, fullname: str, status: int, result: Any) -> None:
        """The device's answer to a ``set``: its reading goes out on the state topic at once."""
        if status != p.OK:
            self.counts.command_errors += 1
            self.drop(f"set {fullname}: {status} {result}")
            return
        self.counts.commands += 1
        if not isinstance(result, dict) or "value" not in result:
            return  # the next reading in the key/value map will say it
        with self._lock:
            device = self.devices.get(fullname)
            if device is not None:
                device.reading = {**device.reading, **{k: result[k] for k in ("value", "unit", "timestamp") if k in result}}
                self._publish_state(device)
        self.wake()

    # -- what an earlier run left retained --

    def earlier(self, topic: str, payload: bytes, retained: bool) -> None:
        """A retained attributes topic of this host: if its device is gone now, clear its topics."""
        where = self.topics.device_of(topic, "attributes")
        if not retained or not payload or where is None or where[0] != self.hostname:
            return
        with self._lock:
            if len(self._earlier) < self.outbox.limit:
                self._earlier.add(where[1])

    def sweep(self, present: Callable[[], Iterable[str]]) -> None:
        """Clear the retained devices seen by :meth:`earlier` that ``present()`` (the full names in the
        key/value map, once it is in sync) does not hold."""
        with self._lock:
            if not self._earlier:
                return
            own = f"{self.hostname}.{self.own_server}."
            names = {fullname.split(".")[-1] for fullname in present()
                     if fullname.startswith(f"{self.hostname}.") and not fullname.startswith(own)}
            gone, self._earlier = self._earlier - names, set()
            for name in sorted(gone):
                log.info("device %s/%s is gone since the last run: clearing its topics", self.hostname, name)
                self._clear(self.hostname, name, COMPONENTS)
                self.counts.removed += 1
        if gone:
            self.wake()


@dataclass
class _Job:
    device: Exported
    value: Any = None


class Requests:
    """Requests to device servers through the RasPy broker, from one thread: commands first, then look-ups."""

    def __init__(self, broker: str, bridge: Bridge, timeout: float = REQUEST_TIMEOUT) -> None:
        self.broker = broker
        self.bridge = bridge
        self.timeout = timeout
        self._commands: deque[_Job] = deque()
        self._lookups: dict[str, _Job] = {}
        self._ready = threading.Condition()
        self._stopping = False

    def describe(self, device: Exported) -> None:
        """Ask the device's ``config`` soon (once per device at a time)."""
        with self._ready:
            self._lookups.setdefault(device.fullname, _Job(device))
            self._ready.notify()

    def set(self, device: Exported, value: Any) -> bool:
        """Send ``set [name, value]`` soon; False when COMMAND_QUEUE commands wait already."""
        with self._ready:
            if len(self._commands) >= COMMAND_QUEUE:
                return False
            self._commands.append(_Job(device, value))
            self._ready.notify()
            return True

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()

    def run(self) -> None:
        with MajorDomoClient(self.broker, timeout=self.timeout, retries=1) as client:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._stopping or self._commands or self._lookups)
                    if self._stopping:
                        return
                    if self._commands:
                        job, command = self._commands.popleft(), True
                    else:
                        job, command = self._lookups.pop(next(iter(self._lookups))), False
                try:
                    self._send(client, job, command)
                except Exception:
                    log.exception("request for %s failed", job.device.fullname)

    def _send(self, client: MajorDomoClient, job: _Job, command: bool) -> None:
        device = job.device
        if command:
            try:
                status, result = client.call(device.service, "set", [device.name, job.value])
            except RequestTimeout as exc:
                status, result = p.ERROR, str(exc)
            self.bridge.confirmed(device.fullname, status, result)
            return
        try:
            status, config = client.call(device.service, "config", [device.name])
        except RequestTimeout:
            log.info("%s did not answer config for %s: announcing it by its reading for now",
                     device.service, device.name)
            self.bridge.described(device.fullname, None, answered=False)
            return
        self.bridge.described(device.fullname, config if status == p.OK else None)
