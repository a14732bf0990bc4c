"""Where a key sits in a TOML file, for error messages: a plain scan of the text.

``tomllib`` gives values without positions, so a refused value is found again in the text:
a key in a table, an entry of an array (inline, or ``[[array]]`` tables), a key of an inline
table, and so on down. When the scan cannot follow a path to its end it answers the closest
line it reached (the entry, else the table).
"""
from __future__ import annotations

import re

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = re.compile(r"(?:\s|#[^\n]*)*")  # blanks, newlines and comments, as between array items


def find_line(text: str, table: str, key: str | None) -> int | None:
    """Line (1-based) of ``key`` in ``[table]``, else of the table's first header."""
    name = r"\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, table.split(".")))
    exact, prefix = re.compile(name + r"\s*\]"), re.compile(name + r"\s*[\].]")
    inside, header_line = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            inside = bool(exact.match(line))
            if header_line is None and prefix.match(line):
                header_line = number
        elif inside and key and _key_line(key).match(line):
            return number
    return header_line


def find_value_line(text: str, table: str, where: tuple[str | int, ...]) -> int | None:
    """Line of the value at ``where`` (keys and indexes, ``("devices", 1, "cycle")``) under ``[table]``."""
    if not where:
        return find_line(text, table, None)
    key, rest = str(where[0]), where[1:]
    if rest and isinstance(rest[0], int):
        found = _array_of_tables(text, f"{table}.{key}", rest[0], rest[1:])
        if found is not None:
            return found
    line = find_line(text, table, key)
    start = _value_start(text, line, key)
    if start is None and rest and isinstance(rest[0], str):  # [table.key], a table of its own
        return find_value_line(text, f"{table}.{key}", rest) or line
    if start is None or not rest:
        return line
    return _line_at(text, _descend(text, start, rest))


def _key_line(key: str) -> re.Pattern[str]:
    return re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _value_start(text: str, line: int | None, key: str) -> int | None:
    """Offset of the value of ``key = value`` on ``line``, or None when that line holds no such key."""
    if line is None:
        return None
    offset = sum(len(row) + 1 for row in text.split("\n")[:line - 1])
    found = _key_line(key).match(text, offset)
    return found.end() if found else None


def _array_of_tables(text: str, array: str, index: int, rest: tuple[str | int, ...]) -> int | None:
    """Line in the ``index``-th ``[[array]]`` table: of ``rest[0]`` when it is there, else of the header."""
    header = re.compile(r"\s*\[\[\s*" + r"\s*\.\s*".join(map(re.escape, array.split("."))) + r"\s*\]\]")
    lines = text.split("\n")
    starts = [number for number, row in enumerate(lines) if header.match(row)]
    if index >= len(starts):
        return None
    first = starts[index]
    if not rest:
        return first + 1
    key = _key_line(str(rest[0]))
    for number in range(first + 1, len(lines)):
        if lines[number].lstrip().startswith("["):
            break
        found = key.match(lines[number])
        if found:
            start = sum(len(row) + 1 for row in lines[:number]) + found.end()
            return _line_at(text, _descend(text, start, rest[1:])) if rest[1:] else number + 1
    return first + 1


def _descend(text: str, start: int, path: tuple[str | int, ...]) -> int:
    """Offset of what ``path`` names inside the value at ``start``, or of the deepest part it reached."""
    position = _SPACE.match(text, start).end()
    for step in path:
        found = _item(text, position, step)
        if found is None:
            break
        position = found
    return position


def _item(text: str, position: int, step: str | int) -> int | None:
    """Offset of entry ``step`` of the array, or of key ``step`` of the inline table, that starts at ``position``."""
    opening = text[position:position + 1]
    if opening not in ("[", "{") or isinstance(step, int) != (opening == "["):
        return None
    closing = "]" if opening == "[" else "}"
    position, count = position + 1, 0
    while position < len(text):
        position = _SPACE.match(text, position).end()
        if text.startswith(closing, position):
            return None
        item = position
        if opening == "{":
            key, position = _read_key(text, position)
            if key is None:
                return None
            if key == step:
                return item
            position = _SPACE.match(text, position + 1).end()  # past '='
        elif count == step:
            return item
        position = _SPACE.match(text, _skip_value(text, position)).end()
        position += text.startswith(",", position)
        count += 1
    return None


def _read_key(text: str, position: int) -> tuple[str | None, int]:
    """A (possibly dotted, possibly quoted) key and the offset of its '='."""
    parts = []
    while True:
        position = _SPACE.match(text, position).end()
        if text[position:position + 1] in ('"', "'"):
            end = _skip_value(text, position)
            parts.append(text[position + 1:end - 1])
        else:
            found = _BARE_KEY.match(text, position)
            if not found:
                return None, position
            parts.append(found.group())
            end = found.end()
        position = _SPACE.match(text, end).end()
        if not text.startswith(".", position):
            break
        position += 1
    return (".".join(parts), position) if text.startswith("=", position) else (None, position)


def _skip_value(text: str, position: int) -> int:
    """Offset just past the value (string, array, inline table or plain word) at ``position``."""
    for quotes in ('"""', "'''", '"', "'"):
        if text.startswith(quotes, position):
            escaped = quotes[0] == '"'
            index = position + len(quotes)
            while index < len(text) and not text.startswith(quotes, index):
                index += 2 if escaped and text[index] == "\\" else 1
            return index + len(quotes)
    if text[position:position + 1] in ("[", "{"):
        depth, index = 0, position
        while index < len(text):
            char = text[index]
            if char in "\"'":
                index = _skip_value(text, index)
                continue
            if char == "#":
                index = text.find("\n", index)
                index = len(text) if index < 0 else index
                continue
            depth += char in "[{"
            depth -= char in "]}"
            index += 1
            if depth == 0:
                break
        return index
    found = re.compile(r"[^,\]}\s#]*").match(text, position)
    return found.end()


__all__ = ["find_line", "find_value_line"]
