"""The protocol module: frame building and parsing, with no sockets."""
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raspy.droplog import DropLog
from raspy.mdp import protocol as p

frames_st = st.lists(st.binary(max_size=12) | st.sampled_from([b"", p.CLIENT, p.WORKER, b"\x01", b"\x02", b"\x03", b"200", b"get"]), max_size=8)


def test_worker_messages_round_trip():
    for command, rest in [(p.READY, [b"pi.fake.devices"]), (p.REQUEST, [b"\x00abc", b"", b"get"]),
                          (p.REPLY, [b"\x00abc", b"", b"200", b"x"]), (p.HEARTBEAT, []), (p.DISCONNECT, [])]:
        assert p.parse_worker(p.worker_message(command, *rest)) == (command, rest)


def test_client_message_round_trip():
    assert p.parse_client(p.client_request(b"echo", [b"a", b"b"])) == (b"echo", [b"a", b"b"])


def test_an_empty_request_is_one_empty_frame():
    """7/MDP: a client REQUEST carries one body frame at least."""
    assert p.client_request(b"mmi.services", []) == [b"", p.CLIENT, b"mmi.services", b""]


@pytest.mark.parametrize("frames", [
    [], [b""], [b"", p.WORKER], [b"x", p.WORKER, p.HEARTBEAT], [b"", b"MDPW02", p.HEARTBEAT],
    [b"", p.WORKER, b"\x09"], [b"", p.WORKER, p.READY], [b"", p.WORKER, p.READY, b""],
    [b"", p.WORKER, p.REPLY, b"client"], [b"", p.WORKER, p.REPLY, b"client", b"x", b"body"],
    [b"", p.WORKER, p.HEARTBEAT, b"extra"], [b"", p.WORKER, p.REPLY, b"client", b""],  # 7/MDP: a body frame at least
    [b"", p.WORKER, p.REQUEST, b"client", b""],
])
def test_bad_worker_messages_raise_protocol_error(frames):
    with pytest.raises(p.ProtocolError):
        p.parse_worker(frames)


@pytest.mark.parametrize("frames", [[], [b"", p.CLIENT], [b"", p.CLIENT, b""], [b"x", p.CLIENT, b"svc"], [b"", p.WORKER, b"svc"],
                                    [b"", p.CLIENT, b"svc"]])
def test_bad_client_messages_raise_protocol_error(frames):
    with pytest.raises(p.ProtocolError):
        p.parse_client(frames)


def test_raspy_request_and_reply_convention():
    assert p.request("list_keys") == [b"list_keys"]
    assert p.parse_request(p.request("get", ["a", 1])) == ("get", ["a", 1])
    assert p.parse_request([b"list_keys"]) == ("list_keys", None)
    assert p.parse_reply(p.reply(p.OK, {"x": [1, 2]})) == (200, {"x": [1, 2]})
    assert p.parse_reply(p.reply(p.NOT_FOUND)) == (404, None)
    assert p.reply(p.OK, ["a", "b"])[0] == b"200"


@pytest.mark.parametrize("frames", [[], [b"get", b"\xc1"], [b"bad word"], [b"get", b"", b""], [b"\xff"]])
def test_bad_requests_raise_protocol_error(frames):
    with pytest.raises(p.ProtocolError):
        p.parse_request(frames)


@pytest.mark.parametrize("frames", [[], [b"2000"], [b"abc"], [b"299"], [b"200", b"\xc1"], [b"200", b"", b""]])
def test_bad_replies_raise_protocol_error(frames):
    with pytest.raises(p.ProtocolError):
        p.parse_reply(frames)


def test_routing_key():
    assert p.routing_key("pi", "fake", "devices") == "pi.fake.devices"
    assert p.routing_key("pi", "core") == "pi.core"
    with pytest.raises(p.ProtocolError):
        p.routing_key("pi.x", "fake")


@settings(max_examples=400, deadline=None)
@given(frames_st)
def test_random_messages_only_raise_protocol_error(frames):
    for parse in (p.parse_worker, p.parse_client, p.parse_request, p.parse_reply):
        try:
            parse(frames)
        except p.ProtocolError:
            pass


def test_a_frame_that_is_not_a_map_is_dropped_logged_and_counted(caplog):
    drop = DropLog(logging.getLogger("test.protocol"))
    assert p.map_or_drop(p.pack({"value": 21.5}), drop, "/device/pi.fake.x") == {"value": 21.5}
    with caplog.at_level(logging.WARNING, "test.protocol"):
        assert p.map_or_drop(p.pack([1, 2]), drop, "/device/pi.fake.x") is None
        assert p.map_or_drop(b"\xc1", drop, "/device/pi.fake.y") is None
    assert drop.dropped == 2
    assert "/device/pi.fake.x: a map is expected, got list" in caplog.text
    assert "/device/pi.fake.y" in caplog.text
