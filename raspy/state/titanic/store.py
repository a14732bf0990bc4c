"""``titanic.store``: a durable key/value store served over MDP."""
from __future__ import annotations

import sqlite3
import time
from typing import Any

from raspy.mdp import protocol as p
from raspy.mdp.service import Service, ServiceError, bad_request, not_found
from raspy.state.titanic.journal import Journal
from raspy.state.titanic.limits import Refusals, TitanicLimits

#: What one entry counts for in the store's bytes: its three names (UTF-8) and its packed value.
SIZE = "length(CAST(service AS BLOB)) + length(CAST(section AS BLOB)) + length(CAST(key AS BLOB)) + length(value)"


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

    Bounded (:class:`~raspy.state.titanic.limits.TitanicLimits`): a key's names
    or a value too large is ``400``; a ``set`` that would take the store past
    its keys or bytes is ``500``, and sets nothing. A set that does not grow the
    store, and every delete, always passes. One thread serves the store, so the
    counts it keeps in memory are the file's.
    """

    def __init__(self, journal: Journal, limits: TitanicLimits, refused: Refusals) -> None:
        self.journal = journal
        self.limits = limits
        self.refused = refused
        self.keys, self.bytes = journal.read(
            lambda db: db.execute(f"SELECT count(*), CAST(total({SIZE}) AS INTEGER) FROM store").fetchone())

    def _refuse(self, status: int, reason: str) -> ServiceError:
        return ServiceError(self.refused(status, reason), reason)

    def _row(self, item: dict, now: float) -> tuple[str, str, str, bytes, float]:
        if "value" not in item:
            raise bad_request("'value' is missing")
        names = _name(item, "service"), _name(item, "section"), _name(item, "key")
        value = p.pack(item["value"])
        size = sum(len(name.encode()) for name in names)
        if size > self.limits.store_key:
            raise self._refuse(p.BAD_REQUEST, f"store key {'/'.join(names)[:80]!r}: its names take {size} bytes, "
                                              f"over store_key {self.limits.store_key}")
        if len(value) > self.limits.store_value:
            raise self._refuse(p.BAD_REQUEST, f"store value of {'/'.join(names)[:80]!r}: {len(value)} bytes, "
                                              f"over store_value {self.limits.store_value}")
        return (*names, value, now)

    def do_set(self, args: Any) -> int:
        items = args if isinstance(args, list) else [args]
        if not items:
            raise bad_request("nothing to set")
        now = time.time()
        rows = [self._row(item, now) for item in map(_args, items)]
        grown = self.journal.write(lambda db: self._set(db, rows))
        self.keys += grown[0]
        self.bytes += grown[1]
        return len(rows)

    def _set(self, db: sqlite3.Connection, rows: list[tuple[str, str, str, bytes, float]]) -> tuple[int, int]:
        """Write ``rows``; the keys and bytes the store grew by. Beyond a bound it raises: its savepoint undoes it."""
        keys = size = 0
        for row in rows:
            old = db.execute(f"SELECT {SIZE} FROM store WHERE service = ? AND section = ? AND key = ?",
                             row[:3]).fetchone()
            db.execute("INSERT OR REPLACE INTO store (service, section, key, value, changed) VALUES (?, ?, ?, ?, ?)",
                       row)
            keys += old is None
            size += sum(len(name.encode()) for name in row[:3]) + len(row[3]) - (old[0] if old else 0)
        limits = self.limits
        if keys > 0 and self.keys + keys > limits.store_keys:
            raise self._refuse(p.ERROR, f"store full: {self.keys} keys of store_keys {limits.store_keys}")
        if size > 0 and self.bytes + size > limits.store_bytes:
            raise self._refuse(p.ERROR, f"store full: {self.bytes} + {size} bytes, over store_bytes "
                                        f"{limits.store_bytes}")
        return keys, size

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
        where = " AND ".join(where)

        def delete(db: sqlite3.Connection) -> tuple[int, int]:
            found = db.execute(f"SELECT count(*), CAST(total({SIZE}) AS INTEGER) FROM store WHERE {where}",
                               params).fetchone()
            db.execute(f"DELETE FROM store WHERE {where}", params)
            return found

        keys, size = self.journal.write(delete)
        self.keys -= keys
        self.bytes -= size
        return keys

    def do_list(self, args: Any) -> list[str]:
        args = _args(args)
        service = _name(args, "service")
        if "section" in args:
            sql, params = "SELECT key FROM store WHERE service = ? AND section = ? ORDER BY key", (service, _name(args, "section"))
        else:
            sql, params = "SELECT DISTINCT section FROM store WHERE service = ? ORDER BY section", (service,)
        return [row[0] for row in self.journal.read(lambda db: db.execute(sql, params).fetchall())]
