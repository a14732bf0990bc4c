"""The spool of a history store: readings kept through a crash until they are on file, damage, the bound."""
from __future__ import annotations

import logging
import os
import random

import pytest
from test_history import expected

from raspy.state.history.ring import HistoryFile
from raspy.state.history.spool import HEADER, MAGIC, Spool, parse, record
from raspy.state.history.store import HistoryStore

T0 = 1_700_000_400
NAME = "pi.fake.aquarium"


def clock() -> float:
    return T0 + 3600


def readings(count: int, start: float = T0) -> list[tuple[float, float]]:
    return [(start + 10 * i, 20 + i / 4) for i in range(count)]


@pytest.fixture
def spooled(tmp_path):
    """A store with a spool that died (never closed) holding 30 readings; the spool's path."""
    store = HistoryStore(tmp_path / "history", clock=clock, spool=tmp_path / "spool")
    for t, v in readings(30):
        assert store.add(NAME, t, v, "C")
    assert store.counts.bytes_written == 0  # nothing on file yet
    return tmp_path / "spool"


def on_file(tmp_path) -> list[list[float]]:
    file = HistoryFile.open(tmp_path / "history" / f"{NAME}.hist")
    try:
        return sorted([t, v] for _, t, v in file.read_raw())
    finally:
        file.close()


def test_what_a_store_that_died_spooled_is_taken_back_and_written(tmp_path, spooled):
    again = HistoryStore(tmp_path / "history", clock=clock, spool=spooled)
    assert again.counts.recovered == 30 and again.counts.readings == 0
    assert on_file(tmp_path) == [[t, v] for t, v in readings(30)]  # written at start
    assert os.path.getsize(spooled) == HEADER.size  # then emptied
    assert again.query(NAME, T0, T0 + 3600)["unit"] == "C"
    assert again.add(NAME, T0 + 300, 1.0) and not again.add(NAME, T0 + 290, 1.0)  # it goes on from there
    again.close()
    assert not spooled.exists()  # a clean stop: everything is on file


def test_a_spool_replayed_twice_adds_nothing_twice(tmp_path, spooled):
    data = spooled.read_bytes()
    HistoryStore(tmp_path / "history", clock=clock, spool=spooled)
    spooled.write_bytes(data)  # died after writing the files, before emptying the spool
    again = HistoryStore(tmp_path / "history", clock=clock, spool=spooled)
    assert again.counts.recovered == 0
    assert again.query(NAME, T0, T0 + 3600)["points"] == [[t, v] for t, v in readings(30)]


def _truncate(path):
    os.truncate(path, os.path.getsize(path) - 5)


def _garbage_appended(path):
    with open(path, "ab") as f:
        f.write(b"\x00\x13garbage, not a record" * 4)


def _garbage_inside(path):
    size = len(record(NAME, T0, 20.0, "C"))
    start = HEADER.size + 10 * size  # records 10 and 11: a mark, then noise
    data = path.read_bytes()
    path.write_bytes(data[:start] + b"\xa5\x5a" + random.Random(7).randbytes(2 * size - 2) + data[start + 2 * size:])


def _wrong_magic(path):
    with open(path, "r+b") as f:
        f.write(b"NOTASPOL")


def _bad_name(path):
    with open(path, "ab") as f:
        f.write(record("../../etc/passwd", T0 + 400, 1.0, None))  # a good record of a reading no history takes


@pytest.mark.parametrize("damage, kept, torn, damaged, dropped", [
    (_truncate, 29, 1, 0, 0),
    (_garbage_appended, 30, 0, 1, 0),
    (_garbage_inside, 28, 0, 1, 0),
    (_wrong_magic, 0, 0, 1, 0),
    (_bad_name, 30, 0, 0, 1),
])
def test_a_damaged_spool_is_reported_keeps_its_good_records_and_never_stops_a_start(
        tmp_path, spooled, caplog, damage, kept, torn, damaged, dropped):
    damage(spooled)
    with caplog.at_level(logging.INFO):
        again = HistoryStore(tmp_path / "history", clock=clock, spool=spooled)
    counts = again.counts
    assert (counts.recovered, counts.spool_torn, counts.spool_damaged, counts.dropped) == (kept, torn, damaged, dropped)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [message.split(": ")[0] for message in errors] == [f"history spool {spooled} is damaged, discarded"] * damaged
    assert len(again.query(NAME, T0, T0 + 3600)["points"]) == kept
    assert os.path.getsize(spooled) == HEADER.size  # what was wrong is discarded with the rest
    assert again.add(NAME, T0 + 1000, 5.0)


def test_a_full_spool_writes_the_files_early_and_is_emptied(tmp_path):
    store = HistoryStore(tmp_path / "history", clock=clock, spool=tmp_path / "spool", spool_bytes=4096)
    sent = readings(200)
    for t, v in sent:
        assert store.add(NAME, t, v, "C")
    per_flush = -(-(4096 - HEADER.size) // len(record(NAME, T0, 20.0, "C")))  # records that fill it
    assert store.counts.early_flushes == 200 // per_flush == 2
    assert on_file(tmp_path) == [[t, v] for t, v in sent[:2 * per_flush]]
    assert os.path.getsize(tmp_path / "spool") < 4096
    assert len(parse((tmp_path / "spool").read_bytes()).readings) == 200 - 2 * per_flush  # the rest, spooled


def test_a_query_answers_what_is_in_memory_and_writes_nothing(tmp_path):
    end = T0 + 8 * 86400
    store = HistoryStore(tmp_path / "history", clock=lambda: end, spool=tmp_path / "spool")
    sent = [(T0 + 30 * i, float(i % 7)) for i in range(8 * 2880)]  # 8 days at 30 s: the raw ring wrapped
    for t, v in sent:
        store.add(NAME, t, v)
    written = store.counts.bytes_written  # so far, each time a device had 1024 readings waiting
    day = store.query(NAME, end - 86400, end)
    assert day["step"] == 0 and day["points"] == [[t, v] for t, v in sent if t >= end - 86400]
    start = T0 + 2 * 86400
    days = store.query(NAME, start, end)
    assert days["step"] == 60 and days["points"] == expected([(t, v) for t, v in sent if t >= start], 60)
    assert store.counts.bytes_written == written
    store.flush()
    assert store.counts.bytes_written > written
    assert store.query(NAME, end - 86400, end) == day and store.query(NAME, start, end) == days


def test_a_spool_that_cannot_be_opened_leaves_the_history_working(tmp_path, caplog):
    (tmp_path / "not-a-folder").write_text("")
    store = HistoryStore(tmp_path / "history", clock=clock, spool=tmp_path / "not-a-folder" / "spool")
    assert "cannot be used" in caplog.text
    assert store.add(NAME, T0, 1.0) and store.query(NAME, T0 - 10, T0 + 10)["points"] == [[T0, 1.0]]
    store.close()


def test_a_new_spool_starts_with_its_header(tmp_path):
    spool, found = Spool.open(tmp_path / "new" / "spool")
    assert found.readings == [] and (found.torn, found.damaged) == (0, [])
    assert (tmp_path / "new" / "spool").read_bytes() == HEADER.pack(MAGIC, 1)
    spool.append(NAME, T0, 1.5, None)
    spool.append(NAME, T0 + 1, 2.5, "°C")
    assert parse((tmp_path / "new" / "spool").read_bytes()).readings == [(NAME, T0, 1.5, None), (NAME, T0 + 1, 2.5, "°C")]
