"""The tests' own TOML writer: what it writes reads back the same, and RasPy loads it."""
from __future__ import annotations

import math
import tomllib

from support import write_config

from raspy.house.config import load_config


def test_written_configuration_reads_back_the_same(tmp_path):
    raspy = {"hostname": "pi", "state_dir": str(tmp_path / "state"), "broker": "tcp://127.0.0.1:5514",
             "heartbeat": 0.2, "liveness": 3, "big": 1e16, "small": -1.5e-05, "flag": False}
    executives = {
        "core": {"kind": "core", "jobs": [{"id": "sec", "interval": 1, "action": "event", "data": {"n": [1, 2.5]}}],
                 "scenarios": [{"name": "t", "startup": True, "params": {"sensor": "/device/pi.t", "low": 18}}],
                 "empty": [], "table": {}},
        "odd": {"quote\"d key": 'back\\slash "quoted"\ttab\nnewline\x7f\x01 héllo ☃ 😀', "on": True},
    }
    path = write_config(tmp_path / "raspy.toml", raspy, executives)
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    assert document == {"raspy": raspy, "executives": executives}
    assert tomllib.loads(write_config(tmp_path / "inf.toml", {"x": math.inf, "y": -math.inf}, {}).read_text()) \
        == {"raspy": {"x": math.inf, "y": -math.inf}}
    assert math.isnan(tomllib.loads(write_config(tmp_path / "nan.toml", {"x": math.nan}, {}).read_text())["raspy"]["x"])


def test_raspy_loads_a_written_configuration(tmp_path):
    path = write_config(tmp_path / "raspy.toml",
                        {"hostname": "test", "state_dir": str(tmp_path), "broker": "tcp://127.0.0.1:6000", "heartbeat": 0.2},
                        {"titanic": {"db": str(tmp_path / "t.sqlite"), "retry_max": 0.5, "dispatch_timeout": 2}})
    config = load_config(path)
    settings = config.settings("titanic")
    assert (settings.hostname, settings.broker, settings.heartbeat) == ("test", "tcp://127.0.0.1:6000", 0.2)
    assert settings.kv_snapshot == "tcp://127.0.0.1:6001"
    assert settings.options == {"db": str(tmp_path / "t.sqlite"), "retry_max": 0.5, "dispatch_timeout": 2}
