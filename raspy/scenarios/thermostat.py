"""Thermostat: a heater switched on below a low mark and off above a high mark.

A startup scenario: it loops until Core asks it to stop. Between the two marks
it leaves the heater as it is (hysteresis), so the heater does not chatter
around one set point. Params (the scenario's ``params`` table):

- ``sensor``: key/value key of the temperature, e.g. ``/device/pi.fake.temperature``
  (a number, or a reading table with a ``value``);
- ``service`` and ``switch``: the device service and switch name of the heater
  (the request is ``set [switch, true|false]``);
- ``low``, ``high``: the marks (degrees); ``interval``: seconds between checks (default 1).

It returns the number of times it switched the heater. ``check(params)`` refuses params it
cannot work with (Core calls it when the configuration is loaded, at ``add``/``update``, and
before each run).
"""


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


def temperature(value):
    """The number in a key/value value, or None."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def decide(current, heating, low, high):
    """Whether the heater should be on: on below ``low``, off above ``high``, else unchanged."""
    if current is None:
        return heating
    if current < low:
        return True
    if current > high:
        return False
    return heating


def run(ctx):
    params = ctx.params
    low, high = float(params["low"]), float(params["high"])
    heating = None  # unknown until the first decision is sent
    switches = 0
    while True:
        wanted = decide(temperature(ctx.get(params["sensor"])), heating, low, high)
        if wanted is not None and wanted != heating:
            status, result = ctx.request(params["service"], "set", [params["switch"], wanted])
            if status == 200:
                ctx.log.info("heater %s", "on" if wanted else "off")
                heating = wanted
                switches += 1
            else:
                ctx.log.warning("heater not switched: %s %s", status, result)
        if ctx.wait(float(params.get("interval", 1.0))):
            return switches
