"""What the MQTT broker should hold: the latest retained payload per topic, and which ones still have to go.

The bridge never queues messages: it writes the payload a topic should have
here, and the link takes the topics that changed when the broker can take
them. While the broker is away a topic that changes ten times is sent once,
and the number of topics held has a limit, so nothing grows without bound.
On every (re)connection everything held is sent again. An empty payload
clears a retained topic at the broker and is forgotten once sent.
"""
from __future__ import annotations

import threading


class Outbox:
    """Latest payload per retained topic, at most ``limit`` topics; safe from any thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.refused = 0
        self._held: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}  # topics to send, oldest change first
        self._lock = threading.Lock()

    def put(self, topic: str, payload: bytes) -> bool:
        """Make ``payload`` the topic's (``b""`` clears it); False, counted, when a new topic finds no room."""
        with self._lock:
            old = self._held.get(topic)
            if old is None and len(self._held) >= self.limit:
                self.refused += 1
                return False
            if old != payload or topic in self._dirty:
                self._held[topic] = payload
                self._dirty[topic] = None
            return True

    def room(self, topics: int) -> bool:
        """Whether ``topics`` new topics would fit."""
        with self._lock:
            return len(self._held) + topics <= self.limit

    def take(self, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` topics to send with their payloads now; they are no longer pending."""
        with self._lock:
            batch = []
            for topic in list(self._dirty)[:count]:
                del self._dirty[topic]
                batch.append((topic, self._held[topic]))
            return batch

    def sent(self, topic: str, payload: bytes) -> None:
        """``payload`` went to the broker: a clear that is still the topic's is done with."""
        if payload:
            return
        with self._lock:
            if self._held.get(topic) == b"" and topic not in self._dirty:
                del self._held[topic]

    def retry(self, topics: list[str]) -> None:
        """These topics were taken but not sent: they are pending again."""
        with self._lock:
            for topic in topics:
                if topic in self._held:
                    self._dirty[topic] = None

    def resend_all(self) -> None:
        """Everything held is pending again (after a reconnection, or when Home Assistant restarts)."""
        with self._lock:
            self._dirty = dict.fromkeys(self._held)

    def get(self, topic: str) -> bytes | None:
        with self._lock:
            return self._held.get(topic)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def __len__(self) -> int:
        return len(self._held)
