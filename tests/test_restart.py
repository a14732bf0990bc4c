"""The restart policy alone: delays and giving up, from the history of exits."""
from __future__ import annotations

from raspy.house.config import Config
from raspy.house.restart import Restart, next_restart


def series(uptimes: list[float], config: Config) -> list[Restart]:
    failures, decisions = 0, []
    for uptime in uptimes:
        decision = next_restart(failures, uptime, config)
        failures = decision.failures
        decisions.append(decision)
    return decisions


def test_quick_exits_back_off_doubling_to_the_cap_then_give_up():
    config = Config(backoff_start=0.5, backoff_cap=1.5, backoff_reset=30, give_up_after=5, gave_up_retry=600)
    decisions = series([1, 1, 1, 1, 1], config)
    assert [d.delay for d in decisions] == [0.0, 0.5, 1.0, 1.5, 600]
    assert [d.gave_up for d in decisions] == [False, False, False, False, True]


def test_a_stable_run_starts_a_new_series():
    config = Config(backoff_start=0.5, backoff_cap=60, backoff_reset=30, give_up_after=3, gave_up_retry=600)
    decisions = series([1, 1, 45, 1], config)
    assert [(d.failures, d.delay) for d in decisions] == [(1, 0.0), (2, 0.5), (1, 0.0), (2, 0.5)]
    assert not any(d.gave_up for d in decisions)
