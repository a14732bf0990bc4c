"""Device histories on fixed-size files: filling, exact consolidation, fixed size, damage, restarts."""
from __future__ import annotations

import logging
import os
import random

import pytest

from raspy.state.history.ring import HEADER_SIZE, Archive, HistoryFile, layout_size
from raspy.state.history.store import DEFAULT_LAYOUT, HistoryError, HistoryStore, span

DAY, WEEK = 86400, 7 * 86400
T0 = 1_700_000_400  # a multiple of 600: slots of every archive start with it
NAME = "pi.fake.aquarium"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def value_at(i: int) -> float:
    """Readings that are not all alike, and exact in binary (multiples of 1/4)."""
    return ((i * 37) % 101) / 4 - 5


def fill(store: HistoryStore, start: float, count: int, every: float = 10, name: str = NAME) -> list[tuple[float, float]]:
    readings = [(start + i * every, value_at(i)) for i in range(count)]
    for t, v in readings:
        assert store.add(name, t, v, "C")
    return readings


def expected(readings, step):
    """Mean, min and max per slot of ``step`` seconds, computed here from the readings."""
    slots: dict[int, list[float]] = {}
    for t, v in readings:
        slots.setdefault(int(t // step), []).append(v)
    return [[slot * step, sum(vs) / len(vs), min(vs), max(vs)] for slot, vs in sorted(slots.items())]


def test_a_day_of_readings_comes_back_raw(tmp_path):
    clock = Clock(T0 + DAY)
    store = HistoryStore(tmp_path, clock=clock)
    readings = fill(store, T0 + 10, DAY // 10)
    answer = store.query(NAME, clock.now - DAY, clock.now)
    assert answer["step"] == 0 and answer["unit"] == "C"
    assert answer["points"] == [[t, v] for t, v in readings]


def test_a_week_of_readings_is_consolidated_exactly(tmp_path):
    clock = Clock(T0 + WEEK)
    store = HistoryStore(tmp_path, clock=clock)
    readings = fill(store, T0, WEEK // 10)
    week = store.query(NAME, clock.now - WEEK, clock.now)
    assert week["step"] == 60
    assert week["points"] == expected(readings, 60)
    assert len(week["points"]) == 7 * 1440
    year = store.query(NAME, clock.now - span("1y"), clock.now)
    assert year["step"] == 600 and year["points"] == expected(readings, 600)
    day = store.query(NAME, clock.now - DAY, clock.now)  # the last day is still raw
    assert day["step"] == 0 and day["points"] == [[t, v] for t, v in readings if t >= clock.now - DAY]


def test_the_file_keeps_its_size_once_the_archives_are_full(tmp_path):
    layout = (Archive(0, 50), Archive(60, 30), Archive(600, 6))
    clock = Clock(T0)
    store = HistoryStore(tmp_path, layout, clock=clock)
    store.add(NAME, T0, 1.0)
    store.flush()
    path = store.path(NAME)
    size = os.path.getsize(path)
    assert size == layout_size(layout) == HEADER_SIZE + 50 * 16 + 36 * 36
    assert os.stat(path).st_blocks * 512 >= size  # reserved on disk, not a sparse file
    clock.now = T0 + 5 * 3600
    readings = fill(store, T0 + 1, 5 * 360)  # 5 hours: every ring wraps several times
    store.flush()
    assert os.path.getsize(path) == size
    raw = store.query(NAME, readings[-50][0], clock.now)
    assert raw["points"] == [[t, v] for t, v in readings[-50:]]  # the last 50 raw readings, in order
    hours = store.query(NAME, clock.now - 3600, clock.now)
    assert hours["step"] == 600 and hours["points"] == expected(readings, 600)[-6:]


def test_a_restart_continues_the_slot_and_skips_what_it_already_has(tmp_path):
    clock = Clock(T0 + 3600)
    store = HistoryStore(tmp_path, clock=clock)
    first = fill(store, T0, 20)  # 200 s: the third minute is half done
    store.close()
    again = HistoryStore(tmp_path, clock=clock)
    assert not again.add(NAME, first[-1][0], 99.0)  # the same reading again (a kv resync): skipped
    rest = [(T0 + 200 + i * 10, value_at(100 + i)) for i in range(20)]
    for t, v in rest:
        again.add(NAME, t, v)
    answer = again.query(NAME, T0, T0 + 400)
    assert answer["points"] == [[t, v] for t, v in first + rest]
    again.close()
    file = HistoryFile.open(again.path(NAME))  # the minute rows span the restart, exactly
    assert [[row.slot * 60, row.mean, row.low, row.high] for row in file.read_rows(1, T0 // 60, (T0 + 390) // 60)] \
        == expected(first + rest, 60)
    file.close()


def test_more_points_than_asked_are_merged_exactly(tmp_path):
    clock = Clock(T0 + DAY)
    store = HistoryStore(tmp_path, clock=clock)
    readings = fill(store, T0, 8640)
    answer = store.query(NAME, T0, T0 + DAY, max_points=24)
    hours = expected([(t - T0, v) for t, v in readings], 3600)
    assert answer["points"] == [[T0 + t, mean, low, high] for t, mean, low, high in hours]


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(b"garbage" * 10),                                   # not a history file
    lambda path: os.truncate(path, os.path.getsize(path) - 36),                       # cut short
    lambda path: _poke(path, 20, b"\xff\xff"),                                        # header bit rot
])
def test_a_damaged_file_is_reported_and_replaced_never_fatal(tmp_path, caplog, damage):
    clock = Clock(T0 + 3600)
    store = HistoryStore(tmp_path, clock=clock)
    fill(store, T0, 100)
    store.close()
    damage(store.path(NAME))
    again = HistoryStore(tmp_path, clock=clock)
    with caplog.at_level(logging.ERROR):
        assert again.add(NAME, T0 + 2000, 7.0)
    assert again.counts.damaged == 1 and "damaged" in caplog.text
    assert store.path(NAME).with_name(NAME + ".hist.damaged").exists()
    assert again.query(NAME, T0, T0 + 3600)["points"] == [[T0 + 2000, 7.0]]
    assert os.path.getsize(again.path(NAME)) == layout_size(DEFAULT_LAYOUT)


def _poke(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_rows_full_of_noise_are_skipped_not_fatal(tmp_path):
    layout = (Archive(0, 50), Archive(60, 30), Archive(600, 6))
    clock = Clock(T0 + 3600)
    store = HistoryStore(tmp_path, layout, clock=clock)
    fill(store, T0, 30)
    store.close()
    size = os.path.getsize(store.path(NAME))
    _poke(store.path(NAME), HEADER_SIZE, random.Random(7).randbytes(size - HEADER_SIZE))
    again = HistoryStore(tmp_path, layout, clock=clock)
    assert again.counts.damaged == 0
    again.query(NAME, T0 - 10 * 3600, T0 + 3600)  # answers whatever survives
    assert again.add(NAME, T0 + 3000, 1.5)


def test_what_has_no_place_in_a_history_is_refused(tmp_path, caplog):
    clock = Clock(T0)
    store = HistoryStore(tmp_path, max_devices=2, clock=clock)
    assert not store.add("../../etc/passwd", T0, 1.0)
    assert not store.add(NAME, T0 + 3600, 1.0)  # an hour in the future
    assert not store.add(NAME, "yesterday", 1.0)
    assert not store.add(NAME, T0, "open")  # not a number: no history, not an error
    assert store.add(NAME, T0, True)  # a binary device: 1
    assert store.add("pi.gpio.door", T0, False)
    assert not store.add("pi.gpio.bell", T0, 1.0)  # a third device: beyond max_devices
    assert store.counts.dropped == 4 and "max_devices" in caplog.text
    assert store.names() == [NAME, "pi.gpio.door"]
    assert not list(tmp_path.parent.glob("*.hist"))
    with pytest.raises(KeyError):
        store.query("pi.gpio.bell", T0 - 10, T0)
    with pytest.raises(HistoryError):
        store.query(NAME, T0, T0 - 10)


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("1m", 60), ("24h", DAY), ("7d", WEEK), ("1y", 365 * DAY), (90, 90)])
def test_spans(text, seconds):
    assert span(text) == seconds


@pytest.mark.parametrize("bad", ["0d", "-1d", "1.5h", "h", "", True, 0, None, "1 d"])
def test_bad_spans(bad):
    with pytest.raises(HistoryError):
        span(bad)


def test_a_layout_must_start_raw(tmp_path):
    with pytest.raises(ValueError):
        HistoryFile.create(tmp_path / "x.hist", (Archive(60, 10),), None, T0)
