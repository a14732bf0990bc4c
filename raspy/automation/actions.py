"""What cron jobs and scenarios may do in the house, injected by Core so both are testable without sockets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Actions:
    """Publish to the key/value map, send an MDP request, read the map, fire a scenario.

    Scenario code gets all but ``fire_scenario`` (see :class:`~raspy.automation.scenario.Context`).
    """

    publish: Callable[[str, Any], None]
    request: Callable[[str, str, Any], tuple[int, Any]]
    get: Callable[[str], Any]
    fire_scenario: Callable[[str, dict[str, Any]], bool]
