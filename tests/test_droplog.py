"""DropLog: lines a peer can trigger are written at a bounded rate, and what was held back is counted."""
from __future__ import annotations

import logging
import re

from support import wait_for

from raspy.droplog import DropLog

log = logging.getLogger("test.droplog")


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == log.name]


def test_a_burst_is_logged_then_held_back_and_counted(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    rate = DropLog(log, burst=3, period=60.0)
    for i in range(10):
        rate("junk", [b"\x00" * 40, b"MDPC01"])
        rate.log(logging.INFO, "request for %s expired", f"junk.{i}")
    assert rate.dropped == 10
    assert lines(caplog) == [
        "dropped message: junk [b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00', "
        "b'MDPC01']",
        "request for junk.0 expired",
        "dropped message: junk [b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00', "
        "b'MDPC01']",
    ]


def test_the_count_held_back_comes_with_the_next_line_or_with_flush(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    rate = DropLog(log, burst=1, period=0.05)
    for i in range(5):
        rate.log(logging.WARNING, "line %d", i)
    assert lines(caplog) == ["line 0"]
    wait_for(lambda: rate.flush() or len(lines(caplog)) == 2, what="the window to pass")
    assert lines(caplog)[1] == "4 more lines not logged"
    for i in range(3):
        rate.log(logging.WARNING, "again %d", i)  # the flush took this window's one line
    wait_for(lambda: rate.log(logging.WARNING, "later") or len(lines(caplog)) == 3, what="the window to pass")
    held = re.fullmatch(r"later \((\d+) more not logged\)", lines(caplog)[2])
    assert held and int(held.group(1)) >= 3  # the three, and the tries of "later" while the window lasted


def test_lines_below_the_logger_level_take_no_room(caplog):
    caplog.set_level(logging.WARNING, logger=log.name)
    rate = DropLog(log, burst=1, period=60.0)
    for _ in range(5):
        rate.log(logging.DEBUG, "client gone")
    rate.log(logging.WARNING, "worker lost")
    assert lines(caplog) == ["worker lost"]
