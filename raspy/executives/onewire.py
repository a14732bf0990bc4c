"""1-Wire thermometers (DS18B20 and kin) read from the kernel's sysfs tree, and their service.

The kernel's ``w1_therm`` driver shows each sensor as ``<devices_dir>/<family>-<serial>/w1_slave``::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

A reading is trusted only if line one ends in ``YES`` (CRC good), the
scratchpad is not all zeros (a sensor that does not answer reads as zeros,
with a matching CRC), line two carries ``t=<millidegrees>`` within the sensor's
range, and it is not 85000 (the power-on value) on a sensor's first read.
Anything else is retried, then raised: a false value is never returned.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from raspy.devices import BaseDevice, Reading, SensorTemperature
from raspy.devices.service import DeviceService, name_arg, reading_result
from raspy.errors import RaspyError
from raspy.executives.device_server import DeviceServer
from raspy.house.executive import Counters, Settings
from raspy.house.options import NOT_NEGATIVE, Option, at_least, with_defaults
from raspy.house.statistics import SNMPCounter, oid
from raspy.mdp import protocol
from raspy.mdp.service import ServiceError, not_found

log = logging.getLogger(__name__)

DEVICES_DIR = "/sys/bus/w1/devices"
#: Family codes of thermometers: DS18S20, DS1822, DS18B20, DS1825, DS28EA00.
THERMOMETER_FAMILIES = frozenset({"10", "22", "28", "3b", "42"})
POWER_ON_VALUE = 85000
#: The range of a DS18B20, in millidegrees Celsius; anything outside is a bad read.
RANGE = (-55000, 125000)

_SENSOR_ID = re.compile(r"([0-9a-fA-F]{2})-[0-9a-fA-F]{12}\Z")
_TEMPERATURE = re.compile(r"\bt=(-?\d+)\Z")


class OneWireError(RaspyError):
    """The bus cannot be listed, or a sensor gave no good reading."""


class UnknownSensor(OneWireError):
    """No such sensor on the bus (never plugged, or unplugged)."""


class BadReading(OneWireError):
    """One ``w1_slave`` read that cannot be trusted; the bus retries it."""


@dataclass
class SensorCounts:
    """Per sensor: readings asked for, extra tries, readings that failed after all tries."""

    reads: int = 0
    retries: int = 0
    errors: int = 0


def is_thermometer(entry: str) -> bool:
    """Whether a devices_dir entry is a thermometer (not the bus master or another family)."""
    match = _SENSOR_ID.match(entry)
    return bool(match) and match.group(1).lower() in THERMOMETER_FAMILIES


def parse_w1_slave(text: str) -> int:
    """Millidegrees Celsius of a ``w1_slave`` text, or :class:`BadReading` with what is wrong."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise BadReading(f"truncated w1_slave ({len(lines)} line(s))")
    check, data = lines[0].strip(), lines[1].strip()
    if not check.endswith("YES"):
        raise BadReading("CRC check failed" if check.endswith("NO") else f"unexpected first line {check[:60]!r}")
    scratchpad = check.split(":")[0].split()
    if all(byte == "00" for byte in scratchpad):
        raise BadReading("all-zero scratchpad: the sensor does not answer")
    match = _TEMPERATURE.search(data)
    if not match:
        raise BadReading(f"no t=<millidegrees> in {data[:60]!r}")
    millis = int(match.group(1))
    if not RANGE[0] <= millis <= RANGE[1]:
        raise BadReading(f"t={millis} is outside the sensor's range")
    return millis


class OneWireBus:
    """The thermometers under ``devices_dir``, rescanned on every call; reads with retries."""

    def __init__(self, devices_dir: str | os.PathLike = DEVICES_DIR, retries: int = 3, pause: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.devices_dir = Path(devices_dir)
        self.retries = retries
        self.pause = pause
        self.sleep = sleep
        self.counters: dict[str, SensorCounts] = {}
        self._trusted: set[str] = set()  # sensors that gave a good reading since they appeared

    def sensors(self) -> list[str]:
        """Ids of the thermometers on the bus now."""
        try:
            entries = os.listdir(self.devices_dir)
        except OSError as exc:
            raise OneWireError(f"cannot list 1-Wire devices in {self.devices_dir}: {exc.strerror}"
                               " (is the w1-gpio overlay loaded?)") from None
        found = sorted(entry for entry in entries if is_thermometer(entry))
        self._trusted &= set(found)  # a sensor plugged in again starts with a power-on read
        return found

    def read(self, sensor_id: str) -> float:
        """Degrees Celsius of one sensor, or :class:`OneWireError` after ``retries`` extra tries."""
        if sensor_id not in self.sensors():
            raise UnknownSensor(f"no 1-Wire thermometer {sensor_id!r} in {self.devices_dir}")
        counters = self.counters.setdefault(sensor_id, SensorCounts())
        counters.reads += 1
        for attempt in range(self.retries + 1):
            if attempt:
                counters.retries += 1
                self.sleep(self.pause)
            try:
                millis = self._read_once(sensor_id)
            except BadReading as exc:
                problem = exc
                log.debug("1-Wire %s try %d: %s", sensor_id, attempt + 1, exc)
                continue
            self._trusted.add(sensor_id)
            return millis / 1000
        counters.errors += 1
        raise OneWireError(f"sensor {sensor_id}: no good reading after {self.retries + 1} tries: {problem}")

    def _read_once(self, sensor_id: str) -> int:
        try:
            text = (self.devices_dir / sensor_id / "w1_slave").read_text(errors="replace")
        except OSError as exc:
            raise BadReading(f"cannot read w1_slave: {exc.strerror}") from None
        millis = parse_w1_slave(text)
        if millis == POWER_ON_VALUE and sensor_id not in self._trusted:
            raise BadReading("85000 is the power-on value, not a temperature, on a first read")
        return millis


class OneWireDevices(DeviceService):
    """``<host>.onewire.devices``: one ``SensorTemperature`` per thermometer on the bus.

    Commands besides those of :mod:`raspy.devices.service`:

    - ``list_keys``: the sensor ids on the bus now (``500`` with the reason if the bus is missing).
    - ``get``: ``sensor_id``; result: ``{"value", "unit", "timestamp", "age"}``. A polled sensor
      answers its last reading (``age`` shows how fresh it is); an unpolled one, or one never read,
      is read now. ``404`` for a sensor not on the bus, ``500`` when it gives no good reading.
    - ``counters``: none; result: ``{sensor_id: {"reads", "retries", "errors"}}``.

    A read blocks (about 750 ms on a real bus); ``due`` belongs in a thread of its own.
    A sensor that is unplugged keeps its configuration for when it comes back.
    """

    def __init__(self, bus: OneWireBus, clock: Callable[[], float] = time.time, poll: int = 0) -> None:
        super().__init__()
        self.bus = bus
        self.clock = clock
        self.poll = poll  # the poll interval a sensor gets when first seen

    def scan(self) -> list[str]:
        """Sensor ids on the bus now, each given a device when first seen."""
        ids = self.bus.sensors()
        for sensor_id in ids:
            if sensor_id not in self.devices:
                self.devices[sensor_id] = SensorTemperature({"name": sensor_id, "poll": self.poll})
        return ids

    def present(self) -> list[str]:
        """:meth:`scan` for a request: a missing bus answers ``500`` with the reason."""
        try:
            return self.scan()
        except OneWireError as exc:
            raise ServiceError(protocol.ERROR, str(exc)) from None

    def device(self, name: str) -> BaseDevice:
        self.present()
        return super().device(name)

    def read(self, sensor_id: str, now: float) -> Reading:
        """Read a sensor into its device, in the device's unit."""
        device = self.devices[sensor_id]
        try:
            celsius = self.bus.read(sensor_id)
        except OneWireError as exc:
            device.note(str(exc))
            raise
        value = celsius * 9 / 5 + 32 if device.config()["unit"] == "F" else celsius
        return device.record(value, now)

    def due(self, now: float) -> list[tuple[str, Reading]]:
        """Read the polled sensors whose interval has passed; failures are logged and skipped.

        A sensor that fails, or is unplugged, waits its interval before the next try too.
        """
        try:
            present = set(self.scan())
        except OneWireError as exc:
            log.warning("%s", exc)
            return []
        out = []
        for sensor_id, device in sorted(self.devices.items()):
            interval, last = device.poll(), self._published.get(sensor_id)
            if interval > 0 and (last is None or now - last >= interval):
                self._published[sensor_id] = now
                if sensor_id in present:
                    try:
                        out.append((sensor_id, self.read(sensor_id, now)))
                    except OneWireError as exc:
                        log.warning("%s", exc)
        return out

    def next_due(self, now: float) -> float | None:
        """The next polled read; a sensor plugged in later is found at the publisher's longest sleep."""
        return min((self._published[sensor_id] + device.poll() if sensor_id in self._published else now
                    for sensor_id, device in self.devices.items() if device.poll() > 0), default=math.inf)

    def do_list_keys(self, args: Any) -> list[str]:
        return self.present()

    def do_get(self, args: Any) -> dict[str, Any]:
        sensor_id = name_arg(args)
        if sensor_id not in self.present():
            raise not_found(f"no 1-Wire thermometer {sensor_id!r} on the bus")
        device, now = self.devices[sensor_id], self.clock()
        if device.reading is None or device.poll() <= 0:
            try:
                self.read(sensor_id, now)
            except OneWireError as exc:
                raise ServiceError(protocol.ERROR, str(exc)) from None
        return reading_result(device.reading, now)

    def do_counters(self, args: Any) -> dict[str, dict[str, int]]:
        return {sensor_id: asdict(counters) for sensor_id, counters in sorted(self.bus.counters.items())}


class OneWire(DeviceServer):
    """The ``onewire`` executive.

    Reads, retries and errors of all sensors are counted in its statistics (``sensor_reads``, ...)
    and in the board's extra counters 0, 1 and 2; ``counters`` on ``<host>.onewire.devices`` gives
    them per sensor.
    """

    options = (
        Option("devices_dir", str, DEVICES_DIR, "where the kernel lists the 1-Wire devices"),
        Option("poll", int, 60, "seconds between readings of a sensor it finds (0: only on request)", at_least(0)),
        Option("retries", int, 3, "reads retried before a sensor's reading is given up", at_least(0)),
        Option("pause", float, 0.2, "seconds between two tries", NOT_NEGATIVE),
    )

    TOTALS = {
        "reads": "readings of w1_slave files",
        "retries": "readings retried: bad CRC, 85 C at power-on, truncated, all-zero or unreadable",
        "errors": "readings given up after the retries",
    }

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        options = with_defaults(self.options, settings.options)  # self.option needs the settings set below
        bus = OneWireBus(options["devices_dir"], retries=options["retries"], pause=options["pause"])
        super().__init__(settings, OneWireDevices(bus, poll=options["poll"]), slot)
        self.totals = {name: self.statistics.add(SNMPCounter(oid(self.service, f"sensor_{name}"), doc))
                       for name, doc in self.TOTALS.items()}
        self._totalled = dict.fromkeys(self.TOTALS, 0)

    def tick(self, now: float) -> None:
        with self._lock:
            per_sensor = list(self.devices.bus.counters.values())
        for index, (name, total) in enumerate(self.totals.items()):
            seen = sum(getattr(counters, name) for counters in per_sensor)
            if seen > self._totalled[name]:
                total.inc(seen - self._totalled[name])
                self.slot.count_extra(index, seen - self._totalled[name])
                self._totalled[name] = seen
