"""Statistics of an executive and the service that answers for them."""
from __future__ import annotations

import pytest

from raspy.house.board import Board
from raspy.house.statistics import SNMPCounter, SNMPFloat, SNMPString, Statistics, StatisticsService
from raspy.mdp import protocol

DEFAULT_OIDS = [f"broker.snmp.{key}" for key in ("bytes_in", "bytes_out", "errors", "replies", "requests")]


@pytest.fixture
def stats():
    return Statistics("broker")


def test_every_executive_has_the_default_counters(stats):
    assert stats.list_keys() == DEFAULT_OIDS
    stats.count(requests=2, replies=1, errors=1, bytes_in=100, bytes_out=40)
    values = {oid: entry["value"] for oid, entry in stats.all().items()}
    assert values == {"broker.snmp.bytes_in": 100, "broker.snmp.bytes_out": 40, "broker.snmp.errors": 1,
                      "broker.snmp.replies": 1, "broker.snmp.requests": 2}
    assert stats.all()["broker.snmp.requests"] == {"value": 2, "doc": "requests received", "type": "counter"}


def test_default_counters_are_the_board_slot_counters():
    board = Board.private(2, ["kv", "broker"])
    slot = board.slot("broker")
    stats = Statistics("broker", slot)
    slot.count(requests=3)  # what the worker loop does
    stats.get("broker.snmp.errors").inc(2)
    assert stats.get("broker.snmp.requests").value == 3
    assert (slot.read().requests, slot.read().errors) == (3, 2)  # one copy: what raspy status shows
    assert board.slot("kv").read().requests == 0


def test_counter_wraps_at_2_to_the_32():
    counter = SNMPCounter("fake.snmp.reads", "sensor reads")
    counter.inc(2 ** 32 - 1)
    assert counter.value == 2 ** 32 - 1
    counter.inc(2)
    assert counter.value == 1
    with pytest.raises(ValueError):
        counter.inc(-1)
    assert counter.value == 1


def test_slot_counters_show_as_counter32_over_the_64_bit_board(stats):
    stats.count(bytes_out=2 ** 32 - 1)
    stats.count(bytes_out=6)
    assert stats.get("broker.snmp.bytes_out").value == 5
    assert stats.slot.read().bytes_out == 2 ** 32 + 5


def test_a_duplicate_oid_is_an_error_and_keeps_the_first(stats):
    first = stats.add(SNMPFloat("broker.snmp.load", "load", 0.5))
    with pytest.raises(ValueError, match="duplicate oid 'broker.snmp.load'"):
        stats.add(SNMPString("broker.snmp.load", "other"))
    with pytest.raises(ValueError, match="duplicate"):
        stats.add(SNMPCounter("broker.snmp.requests", "again"))
    assert stats.get("broker.snmp.load") is first


@pytest.mark.parametrize("oid", ["broker.requests", "snmp.requests", "broker.snmp.", "broker.snmp.a b", ""])
def test_an_oid_must_read_module_snmp_key(oid):
    with pytest.raises(ValueError, match="bad oid"):
        SNMPCounter(oid, "doc")


def test_float_and_string_values_hold_what_they_are_given(stats):
    temperature = stats.add(SNMPFloat("fake.snmp.temperature", "water temperature, degrees C"))
    version = stats.add(SNMPString("fake.snmp.version", "software version", "0.1.0"))
    temperature.value = 24
    assert stats.all()["fake.snmp.temperature"] == {"value": 24.0, "doc": "water temperature, degrees C",
                                                    "type": "float"}
    with pytest.raises(TypeError):
        version.value = 2
    assert version.value == "0.1.0"
    with pytest.raises(KeyError, match="unknown oid"):
        stats.get("fake.snmp.nothing")


def call(service, command, *args):
    return protocol.parse_reply(service(protocol.request(command, *args)))


def test_statistics_service_answers_list_keys_get_and_all(stats):
    stats.add(SNMPString("broker.snmp.version", "software version", "0.1.0"))
    stats.count(requests=7)
    service = StatisticsService(stats)
    assert call(service, "list_keys") == (200, sorted(DEFAULT_OIDS + ["broker.snmp.version"]))
    assert call(service, "get", "broker.snmp.requests") == (
        200, {"value": 7, "doc": "requests received", "type": "counter"})
    status, everything = call(service, "all")
    assert status == 200 and everything == stats.all()


@pytest.mark.parametrize("command, args, status", [
    ("get", ("broker.snmp.nothing",), 404),
    ("get", (42,), 400),
    ("get", (), 400),
    ("list_keys", ("extra",), 400),
    ("all", ([1],), 400),
    ("set", ("broker.snmp.requests",), 501),
])
def test_statistics_service_rejects_bad_requests(stats, command, args, status):
    got, reason = call(StatisticsService(stats), command, *args)
    assert got == status and isinstance(reason, str) and reason
