"""Loading a configuration (every check of every kind) next to parsing its TOML alone, in the same run.

Run: ``PYTHONPATH=. python -m pytest bench/bench_config.py --benchmark-only``.
The ratio is the result: what checking a whole house (options of each kind, fake devices,
cron triggers, the thermostat's file and its ``check(params)``) costs over ``tomllib``'s parse.
The kinds are imported once, before the rounds: ``start`` and ``reload`` pay that once.
"""
from __future__ import annotations

import tomllib

import pytest

from raspy.house.config import load_config

HOUSE = """
[raspy]
hostname = "pi"
state_dir = "state"

[executives.broker]
[executives.kv]
[executives.titanic]
retention = 86400

[executives.core]
jobs = [
  {id = "heat", cron = "0 19 * * *", action = "request", service = "pi.fake.devices", command = "set", args = ["heater", true]},
  {id = "morning", cron = "30 6 * * 1-5", action = "event"},
  {id = "feed", interval = 3600, action = "event"},
]

[[executives.core.scenarios]]
name = "thermostat"
startup = true
params = {sensor = "/device/pi.fake.aquarium", service = "pi.fake.devices", switch = "heater", low = 24.5, high = 25.5}

[executives.fake]
devices = [
  {name = "aquarium", kind = "cyclic", cycle = 86400, min = 24.0, max = 27.0, unit = "C", poll = 10},
  {name = "outside", kind = "cyclic", cycle = 86400, min = 4.0, max = 16.0, unit = "C", poll = 30},
  {name = "heater", kind = "switch", poll = 30},
]

[executives.web]
port = 8080
"""


@pytest.fixture(scope="module")
def house(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "house.toml"
    path.write_text(HOUSE)
    load_config(path)  # imports every kind once
    return path


@pytest.mark.benchmark(group="config")
def test_load_config(benchmark, house):
    config = benchmark(load_config, house)
    assert len(config.executives) == 6


@pytest.mark.benchmark(group="config")
def test_toml_parse_reference(benchmark, house):
    text = house.read_text()
    assert len(benchmark(tomllib.loads, text)["executives"]) == 6
