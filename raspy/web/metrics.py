"""Prometheus text exposition (format 0.0.4) of a status snapshot."""
from __future__ import annotations

import math
from typing import Any, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: name -> (type, help); the order is the order of the output.
METRICS = {
    "raspy_board_up": ("gauge", "1 when the supervisor's board could be read"),
    "raspy_executive_up": ("gauge", "1 when the executive runs and beats"),
    "raspy_executive_restarts_total": ("counter", "restarts of the executive by the supervisor"),
    "raspy_executive_requests_total": ("counter", "requests handled by the executive"),
    "raspy_executive_errors_total": ("counter", "requests answered with a 5xx status, and handshakes and key/value "
                                                "updates refused (a 4xx answer is the caller's mistake and is not "
                                                "counted)"),
    "raspy_executive_heartbeat_age_seconds": ("gauge", "seconds since the executive last beat"),
    "raspy_broker_up": ("gauge", "1 when the broker answered the last MMI query"),
    "raspy_service_workers": ("gauge", "workers the broker knows for an MDP service"),
    "raspy_device_value": ("gauge", "latest numeric value of a device"),
    "raspy_device_age_seconds": ("gauge", "seconds since the device value was read"),
    "raspy_device_stale": ("gauge", "1 when the device value is older than its poll interval allows"),
    "raspy_host_cpu_temperature_celsius": ("gauge", "CPU temperature"),
    "raspy_host_under_voltage": ("gauge", "1 while the Pi reports under-voltage"),
    "raspy_host_throttled": ("gauge", "1 while the Pi is throttled"),
    "raspy_host_disk_free_bytes": ("gauge", "free bytes on the state directory's file system"),
    "raspy_host_load1": ("gauge", "one-minute load average"),
    "raspy_host_up": ("gauge", "1 while the host's summary under /host/ is fresh, 0 once it fell silent"),
    "raspy_host_seen_age_seconds": ("gauge", "seconds since the host's summary was last seen"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2 ** 53 else repr(float(value))


def _samples(status: dict[str, Any]) -> Iterable[tuple[str, dict[str, str], float]]:
    here = status["hostname"]
    yield "raspy_board_up", {}, int(status["board"]["ok"])
    for ex in status["executives"]:
        labels = {"host": here, "name": ex["name"]}
        yield "raspy_executive_up", labels, int(ex["ready"])
        yield "raspy_executive_restarts_total", labels, ex["restarts"]
        yield "raspy_executive_requests_total", labels, ex["requests"]
        yield "raspy_executive_errors_total", labels, ex["errors"]
        if ex["heartbeat_age"] is not None:
            yield "raspy_executive_heartbeat_age_seconds", labels, ex["heartbeat_age"]
    yield "raspy_broker_up", {}, int(status["broker"]["up"])
    for svc in status["services"]:
        yield "raspy_service_workers", {"service": svc["name"]}, svc["workers"]
    for dev in status["devices"]:
        labels = {"device": dev["name"]}
        value = dev["value"]
        if isinstance(value, (int, float)):
            yield "raspy_device_value", {**labels, "unit": dev["unit"]}, float(value)
        yield "raspy_device_age_seconds", labels, dev["age"]
        yield "raspy_device_stale", labels, int(dev["stale"])
    yield from _health(status["host"], {"host": here})
    for host in status["hosts"]:
        labels = {"host": host["name"]}
        yield "raspy_host_up", labels, int(not host["silent"])
        yield "raspy_host_seen_age_seconds", labels, host["age"]
        if host["name"] == here:
            continue  # this host's own board and health are read directly, above
        for ex in host["executives"]:
            labels = {"host": host["name"], "name": ex["name"]}
            yield "raspy_executive_up", labels, int(ex["state"] == "running" and not host["silent"])
            yield "raspy_executive_restarts_total", labels, ex["restarts"]
        yield from _health(host["health"], {"host": host["name"]})


def _health(host: dict[str, Any], labels: dict[str, str]) -> Iterable[tuple[str, dict[str, str], float]]:
    """A host's health readings (:func:`raspy.house.health.host_health`) as samples."""
    if "cpu_temperature" in host:
        yield "raspy_host_cpu_temperature_celsius", labels, host["cpu_temperature"]
    if "throttled" in host:
        yield "raspy_host_under_voltage", labels, int(host["throttled"]["under_voltage"])
        yield "raspy_host_throttled", labels, int(host["throttled"]["throttled"])
    elif "under_voltage" in host:
        yield "raspy_host_under_voltage", labels, int(host["under_voltage"])
    if "disk" in host:
        yield "raspy_host_disk_free_bytes", labels, host["disk"]["free_bytes"]
    if "load" in host:
        yield "raspy_host_load1", labels, host["load"][0]


def render(status: dict[str, Any]) -> str:
    """The exposition text of a snapshot as built by :func:`raspy.web.app.snapshot`."""
    by_name: dict[str, list[str]] = {name: [] for name in METRICS}
    for name, labels, value in _samples(status):
        text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
        by_name[name].append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    lines = []
    for name, samples in by_name.items():
        if samples:
            kind, help_text = METRICS[name]
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"
