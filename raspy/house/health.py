"""Host health from what the kernel exposes: CPU temperature, Pi power flags, disk, load.

Every reading is optional: a laptop has no ``get_throttled``, a container may
have no thermal zone. A missing source leaves its key out rather than showing
a made-up zero. ``root`` lets tests point the readers at a fake ``/sys``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Bits of the Raspberry Pi firmware's ``get_throttled`` word (see vcgencmd's documentation).
THROTTLED_BITS = {
    0: "under_voltage",
    1: "frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "frequency_capped_occurred",
    18: "throttling_occurred",
    19: "soft_temperature_limit_occurred",
}
THROTTLED_PATHS = (
    "sys/devices/platform/soc/soc:firmware/get_throttled",
    "sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/get_throttled",
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_temperature(root: Path) -> float | None:
    """Degrees Celsius of the CPU's thermal zone (the first zone when none says ``cpu``)."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"))
    zones.sort(key=lambda zone: "cpu" not in (_read(zone / "type") or "").lower())
    for zone in zones:
        raw = _read(zone / "temp")
        try:
            return int(raw) / 1000.0 if raw is not None else None
        except ValueError:
            continue
    return None


def throttled(root: Path) -> dict[str, Any] | None:
    """The Pi's under-voltage and throttling flags, decoded; ``None`` off a Pi."""
    for relative in THROTTLED_PATHS:
        raw = _read(root / relative)
        if raw is None:
            continue
        try:
            word = int(raw, 16)
        except ValueError:
            continue
        flags = {name: bool(word >> bit & 1) for bit, name in THROTTLED_BITS.items()}
        return {"raw": f"0x{word:x}", **flags}
    return None


def under_voltage_alarm(root: Path) -> bool | None:
    """The ``rpi_volt`` hwmon alarm newer kernels expose instead of ``get_throttled``."""
    for hwmon in (root / "sys/class/hwmon").glob("hwmon*"):
        if _read(hwmon / "name") == "rpi_volt":
            raw = _read(hwmon / "in0_lcrit_alarm")
            if raw in ("0", "1"):
                return raw == "1"
    return None


def disk(path: Path) -> dict[str, int] | None:
    """Free and total bytes of the file system holding ``path``."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return {"free_bytes": stat.f_bavail * stat.f_frsize, "total_bytes": stat.f_blocks * stat.f_frsize}


def size(n: float) -> str:
    """Bytes as a person reads them: ``512 B``, ``12.3 GB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def host_health(root: Path = Path("/"), disk_path: Path = Path("/")) -> dict[str, Any]:
    """Whatever of the readings this machine has, keyed ``cpu_temperature``, ``throttled``,
    ``under_voltage``, ``disk``, ``load``."""
    readings = {
        "cpu_temperature": cpu_temperature(root),
        "throttled": throttled(root),
        "under_voltage": under_voltage_alarm(root),
        "disk": disk(disk_path),
        "load": load(),
    }
    return {name: value for name, value in readings.items() if value is not None}
