"""Thermostat: a heater switched on below a low mark and off above a high mark.

A startup scenario: it loops until Core asks it to stop. Between the two marks
it leaves the heater as it is (hysteresis), so the heater does not chatter
around one set point. Params (the scenario's ``params`` table):

- ``sensor``: key/value key of the temperature, e.g. ``/device/pi.fake.temperature``
  (a number, or a reading table with a ``value``);
- ``service`` and ``switch``: the device service and switch name of the heater
  (it is read with ``get switch`` and set with ``set [switch, true|false]``);
- ``low``, ``high``: the marks (degrees); ``interval``: seconds between checks (default 1);
- ``max_age``: seconds after which a reading counts as missing (default three times the
  reading's own ``poll`` interval; none when the reading has no interval).

A control loop must not trust its memory of what it drives: someone may switch
the heater by hand, and a restarted device server comes back with its switch
off. So every check reads the heater's real state from its service and
compares the decision with that. And it must not trust a reading that stopped
coming: with no temperature (none yet, or older than ``max_age``), the heater
is switched off, the safe side for a tank.

It returns the number of times it switched the heater. ``check(params)`` refuses params it
cannot work with (Core calls it when the configuration is loaded, at ``add``/``update``, and
before each run).
"""
import time


def check(params):
    """Raise ValueError with the reason unless the params are complete and the marks in order."""
    for key in ("sensor", "service", "switch"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise ValueError(f"{key} is missing (a string)")
    for key in ("low", "high", "interval"):
        value = params.get(key, 1.0 if key == "interval" else None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
    if params["low"] >= params["high"]:
        raise ValueError(f"low mark {params['low']} must be below high mark {params['high']}")
    if params.get("interval", 1.0) <= 0:
        raise ValueError(f"interval must be positive, got {params['interval']!r}")
    max_age = params.get("max_age")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0):
        raise ValueError(f"max_age must be a positive number of seconds, got {max_age!r}")


def temperature(value, now, max_age=None):
    """The number in a key/value value, or None when there is none or it is older than ``max_age``."""
    if isinstance(value, dict):
        poll = value.get("poll")
        if max_age is None and isinstance(poll, (int, float)) and poll > 0:
            max_age = 3 * poll
        stamp = value.get("timestamp")
        if max_age is not None and isinstance(stamp, (int, float)) and now - stamp > max_age:
            return None
        value = value.get("value")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def decide(current, heating, low, high):
    """Whether the heater should be on: on below ``low``, off above ``high`` or with no temperature, else as it is."""
    if current is None:
        return False
    if current < low:
        return True
    if current > high:
        return False
    return heating


def heater_state(ctx, service, switch):
    """The heater's state as its service reads it now, or None when the service does not say."""
    try:
        status, result = ctx.request(service, "get", switch)
    except TimeoutError as exc:
        ctx.log.warning("heater state unknown: %s", exc)
        return None
    if status != 200 or not isinstance(result, dict) or not isinstance(result.get("value"), bool):
        ctx.log.warning("heater state unknown: %s %s", status, result)
        return None
    return result["value"]


def switch_heater(ctx, service, switch, on):
    """Ask the service to switch the heater; whether it did."""
    try:
        status, result = ctx.request(service, "set", [switch, on])
    except TimeoutError as exc:
        status, result = None, exc
    if status != 200:
        ctx.log.warning("heater not switched %s: %s %s", "on" if on else "off", status, result)
        return False
    ctx.log.info("heater %s", "on" if on else "off")
    return True


def run(ctx):
    params = ctx.params
    low, high = float(params["low"]), float(params["high"])
    max_age = params.get("max_age")
    service, switch = params["service"], params["switch"]
    switches = 0
    while True:
        current = temperature(ctx.get(params["sensor"]), time.time(), max_age)
        heating = heater_state(ctx, service, switch)
        wanted = decide(current, heating, low, high)
        if wanted is not None and wanted != heating and switch_heater(ctx, service, switch, wanted):
            switches += 1
        if ctx.wait(float(params.get("interval", 1.0))):
            return switches
