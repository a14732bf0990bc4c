"""``titanic.store``: a durable key/value store served over MDP."""
from __future__ import annotations

import time
from typing import Any

from raspy.mdp import protocol as p
from raspy.mdp.service import Service, bad_request, not_found
from raspy.state.titanic.journal import Journal


def _name(args: dict, field: str) -> str:
    value = args.get(field)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field!r} must be a non-empty string")
    return value


def _args(args: Any) -> dict:
    if not isinstance(args, dict):
        raise bad_request("arguments must be a map with 'service' (and 'section', 'key')")
    return args


class StoreService(Service):
    """``titanic.store``: values kept under (service, section, key), durable before the reply.

    Commands: ``set`` {service, section, key, value} or a list of them (one
    commit); ``get`` {service, section, key} (404 when missing), or without
    key the whole section as a map; ``delete`` {service, section?, key?};
    ``list`` {service} -> sections, {service, section} -> keys.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def do_set(self, args: Any) -> int:
        items = args if isinstance(args, list) else [args]
        if not items:
            raise bad_request("nothing to set")
        rows = []
        now = time.time()
        for item in map(_args, items):
            if "value" not in item:
                raise bad_request("'value' is missing")
            rows.append((_name(item, "service"), _name(item, "section"), _name(item, "key"), p.pack(item["value"]), now))
        self.journal.write(lambda db: db.executemany(
            "INSERT OR REPLACE INTO store (service, section, key, value, changed) VALUES (?, ?, ?, ?, ?)", rows))
        return len(rows)

    def do_get(self, args: Any) -> Any:
        args = _args(args)
        service, section = _name(args, "service"), _name(args, "section")
        if "key" not in args:
            rows = self.journal.read(lambda db: db.execute(
                "SELECT key, value FROM store WHERE service = ? AND section = ? ORDER BY key",
                (service, section)).fetchall())
            return {key: p.unpack(value) for key, value in rows}
        key = _name(args, "key")
        row = self.journal.read(lambda db: db.execute(
            "SELECT value FROM store WHERE service = ? AND section = ? AND key = ?", (service, section, key)).fetchone())
        if row is None:
            raise not_found(f"no key {key!r} in {service}/{section}")
        return p.unpack(row[0])

    def do_delete(self, args: Any) -> int:
        args = _args(args)
        where, params = ["service = ?"], [_name(args, "service")]
        if "section" in args:
            where.append("section = ?")
            params.append(_name(args, "section"))
        if "key" in args:
            if "section" not in args:
                raise bad_request("deleting a key needs its 'section'")
            where.append("key = ?")
            params.append(_name(args, "key"))
        sql = "DELETE FROM store WHERE " + " AND ".join(where)
        return self.journal.write(lambda db: db.execute(sql, params).rowcount)

    def do_list(self, args: Any) -> list[str]:
        args = _args(args)
        service = _name(args, "service")
        if "section" in args:
            sql, params = "SELECT key FROM store WHERE service = ? AND section = ? ORDER BY key", (service, _name(args, "section"))
        else:
            sql, params = "SELECT DISTINCT section FROM store WHERE service = ? ORDER BY section", (service,)
        return [row[0] for row in self.journal.read(lambda db: db.execute(sql, params).fetchall())]
