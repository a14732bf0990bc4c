"""Acting on the house from the page's API: set a device, switch and tune a scenario, run a cron job,
read a history; the token, Origin and header rules. Through WSGI, on FakeHouse's recorded calls."""
from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest
from web_house import FakeHouse

from raspy.web.app import MAX_BODY, Unavailable, make_app

TOKEN = "correct horse"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "http://127.0.0.1"  # what setup_testing_defaults makes of the page's own address


def request(app, path: str, method: str = "POST", body=None, headers: dict | None = None, raw: bytes | None = None,
            content_type: str = "application/json") -> tuple[int, dict, dict]:
    """One request through WSGI: (status, headers, JSON body)."""
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        environ.update({"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)})
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    started = {}
    out = b"".join(app(environ, lambda status, hdrs, exc=None: started.update(status=status, headers=hdrs)))
    headers_out = {k.lower(): v for k, v in started["headers"]}
    return int(started["status"].split()[0]), headers_out, json.loads(out) if out.startswith((b"{", b"[")) else {}


@pytest.fixture
def house() -> FakeHouse:
    return FakeHouse()


@pytest.fixture
def app(house):
    return make_app(house, token=TOKEN)


def test_set_a_device_through_its_server_and_answer_the_confirmed_reading(app, house):
    house.answers[("pi.gpio.devices", "set")] = (200, {"value": True, "unit": None, "timestamp": 5.0, "age": 0.0})
    status, _, body = request(app, "/api/devices/pi.gpio.pump/set", body={"value": "on"}, headers=AUTH)
    assert (status, body["value"]) == (200, True)
    assert house.calls == [("pi.gpio.devices", "set", ["pump", "on"])]


@pytest.mark.parametrize("answer, status, reason", [
    ((400, "a switch is set to true/false"), 400, "a switch is set to true/false"),
    ((404, "no device 'pum'"), 404, "no device 'pum'"),
    ((500, "pin gone"), 502, "pin gone"),
    (Unavailable("pi.gpio.devices did not answer within 5 s"), 503, "did not answer"),
])
def test_the_device_servers_refusal_comes_back_with_its_reason(app, house, answer, status, reason):
    house.answers[("pi.gpio.devices", "set")] = answer
    got, _, body = request(app, "/api/devices/pi.gpio.pump/set", body={"value": 3}, headers=AUTH)
    assert got == status and reason in body["error"]


@pytest.mark.parametrize("headers, why", [
    ({}, "a valid token"),
    ({"Authorization": "Bearer wrong"}, "a valid token"),
    ({**AUTH, "Origin": "http://evil.example"}, "another site"),
])
def test_no_action_without_the_token_or_from_another_site(app, house, headers, why):
    for path, body in [("/api/devices/pi.gpio.pump/set", {"value": True}), ("/api/scenarios/thermostat/disable", None),
                       ("/api/scenarios/thermostat/params", {"params": {"low": 1}}), ("/api/cron/feed/run", None)]:
        status, _, answer = request(app, path, body=body, headers=headers)
        assert status == 403 and why in answer["error"], path
    assert house.calls == []


def test_the_pages_own_origin_may_post(app, house):
    status, _, _ = request(app, "/api/cron/feed/run", headers={**AUTH, "Origin": ORIGIN})
    assert status == 200 and house.calls == [("pi.core.cron", "run", "feed")]


def test_without_a_token_configured_there_are_no_actions(house):
    app = make_app(house, token=None)
    status, _, _ = request(app, "/api/devices/pi.gpio.pump/set", body={"value": True}, headers=AUTH)
    assert status in (404, 405) and house.calls == []


@pytest.mark.parametrize("path, body, raw, content_type, status, reason", [
    ("/api/devices/pump/set", {"value": True}, None, "application/json", 404, "is not <host>.<server>.<device>"),
    ("/api/devices/pi.gpio.pump/set", {"level": 3}, None, "application/json", 400, '{"value": ...}'),
    ("/api/devices/pi.gpio.pump/set", None, b"value=1", "application/x-www-form-urlencoded", 400, "must be JSON"),
    ("/api/devices/pi.gpio.pump/set", None, b"{not json", "application/json", 400, "Expecting property name"),
    ("/api/devices/pi.gpio.pump/set", None, b"[1]", "application/json", 400, "a JSON object"),
    ("/api/devices/pi.gpio.pump/set", None, b'{"value": "' + b"x" * MAX_BODY + b'"}', "application/json", 400, "larger"),
    ("/api/scenarios/thermostat/params", {"params": 3}, None, "application/json", 400, '{"params": {...}}'),
])
def test_bad_bodies_are_refused_and_nothing_is_asked(app, house, path, body, raw, content_type, status, reason):
    got, _, answer = request(app, path, body=body, raw=raw, content_type=content_type, headers=AUTH)
    assert got == status and reason in answer["error"]
    assert house.calls == []


def test_enable_and_disable_a_scenario(app, house):
    assert request(app, "/api/scenarios/thermostat/disable", headers=AUTH)[0] == 200
    assert request(app, "/api/scenarios/thermostat/enable", headers=AUTH)[0] == 200
    assert house.calls == [("pi.core.scenario", "disable", "thermostat"), ("pi.core.scenario", "enable", "thermostat")]


def test_change_a_thermostats_set_points_keeping_its_other_params(app, house):
    current = {"sensor": "/device/pi.fake.t", "service": "pi.fake.devices", "switch": "heater", "low": 24.5, "high": 25.5}
    house.answers[("pi.core.scenario", "info")] = (200, {"name": "thermostat", "conf": {"params": current}})
    status, _, _ = request(app, "/api/scenarios/thermostat/params", body={"params": {"low": 22, "high": 23}}, headers=AUTH)
    assert status == 200
    assert house.calls[-1] == ("pi.core.scenarios", "update", {"name": "thermostat", "params": {**current, "low": 22, "high": 23}})
    house.answers[("pi.core.scenarios", "update")] = (400, "low mark 23 must be below high mark 22")
    status, _, body = request(app, "/api/scenarios/thermostat/params", body={"params": {"low": 23, "high": 22}}, headers=AUTH)
    assert status == 400 and "must be below" in body["error"]


def test_history_is_asked_of_the_history_service(app, house):
    house.answers[("pi.history.query", "get")] = (200, {"device": "pi.fake.t", "unit": "C", "step": 0, "points": [[1.0, 2.0]]})
    status, _, body = request(app, "/api/history?device=pi.fake.t&range=7d", method="GET")
    assert status == 200 and body["points"] == [[1.0, 2.0]] and body["unit"] == "C"
    request(app, "/api/history?device=pi.fake.t&from=10&to=20&points=5", method="GET")
    request(app, "/api/history?device=pi.fake.t", method="GET")
    assert [args for _, _, args in house.calls] == [
        {"device": "pi.fake.t", "range": "7d"},
        {"device": "pi.fake.t", "from": 10.0, "to": 20.0, "points": 5},
        {"device": "pi.fake.t", "range": "24h"},
    ]
    status, _, body = request(app, "/api/history?device=pi.fake.t&from=monday", method="GET")
    assert status == 400 and "bad query" in body["error"]
    house.answers[("pi.history.query", "get")] = (404, "no history of 'pi.fake.x'")
    assert request(app, "/api/history?device=pi.fake.x&range=1y", method="GET")[0] == 404


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/status.js", "/nothing"])
def test_every_answer_carries_the_security_headers(app, path):
    _, headers, _ = request(app, path, method="GET")
    assert headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
