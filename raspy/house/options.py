"""What an executive kind accepts in its ``[executives.NAME]`` table, declared in one place.

A kind lists its options as :class:`Option` records (name, type, default, one-line doc, and a
check), in the class attribute ``options`` of its Executive subclass. Loading the configuration
reads that attribute without starting anything: an unknown key, a value of the wrong type, or
one its check refuses stops start-up with the key and the reason. The docs' option tables are
made from the same records (:func:`markdown_table`). A kind that declares nothing (``options``
is None) accepts any key.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from raspy.errors import InvalidValue

#: What a value of each option type is called in a refusal ("'x' is not a number").
TYPE_NAMES: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                               list: "a list", dict: "a table"}


@dataclass(frozen=True)
class Rule:
    """A simple check: ``test(value)`` must hold; ``wanted`` says what the value must be, in full."""

    test: Callable[[Any], bool]
    wanted: str


POSITIVE = Rule(lambda v: v > 0, "a number > 0")
NOT_NEGATIVE = Rule(lambda v: v >= 0, "a number >= 0")
ENDPOINT = Rule(lambda v: bool(re.match(r"(tcp|ipc|inproc)://.", v)), "a ZeroMQ endpoint")
PORT = Rule(lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def at_least(low: int) -> Rule:
    """An integer of at least ``low``."""
    return Rule(lambda v: v >= low, f"an integer >= {low}")


def one_of(*choices: str) -> Rule:
    """One of a few words."""
    return Rule(lambda v: v in choices, f"one of {', '.join(map(repr, choices))}")


@dataclass(frozen=True)
class Option:
    """One option of a kind.

    ``default`` None means "none", or one the kind derives (its ``doc`` says which); a ``required``
    option has none. ``check`` is a :class:`Rule`, or a function raising ``ValueError`` with the
    reason (an :class:`~raspy.errors.InvalidValue` may say where inside the value).
    """

    name: str
    type: type
    default: Any
    doc: str
    check: Rule | Callable[[Any], None] | None = None
    required: bool = False

    @property
    def wanted(self) -> str:
        """What a value must be, e.g. ``a number > 0``."""
        return self.check.wanted if isinstance(self.check, Rule) else TYPE_NAMES[self.type]

    def validate(self, value: Any) -> None:
        """Raise :class:`~raspy.errors.InvalidValue` (under this option's name) unless ``value`` will do."""
        if not has_type(value, self.type) or (isinstance(self.check, Rule) and not self.check.test(value)):
            raise InvalidValue(f"{value!r} is not {self.wanted}", self.name)
        if self.check is not None and not isinstance(self.check, Rule):
            try:
                self.check(value)
            except InvalidValue as exc:
                raise exc.inside(self.name) from None
            except ValueError as exc:
                raise InvalidValue(str(exc), self.name) from None


def has_type(value: Any, wanted: type) -> bool:
    """TOML's view: a boolean is no number, an integer is a number, a number is finite."""
    if isinstance(value, bool):
        return wanted is bool
    if wanted is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, wanted)


def check_table(declared: Iterable[Option] | None, given: Mapping[str, Any], fixed: tuple[str, ...] = ()) -> None:
    """Raise :class:`~raspy.errors.InvalidValue` for the first key of ``given`` that is unknown or refused.

    ``fixed`` are keys the caller handles itself (``kind``, ``enabled``), named among the known ones.
    Nothing is checked when ``declared`` is None: the kind declares nothing.
    """
    if declared is None:
        return
    options = {option.name: option for option in declared}
    for key, value in given.items():
        if key not in options:
            raise InvalidValue(f"unknown key; known: {', '.join([*fixed, *options])}", key)
        options[key].validate(value)
    for option in options.values():
        if option.required and option.name not in given:
            raise InvalidValue(f"missing: {option.wanted}", option.name)


def with_defaults(declared: Iterable[Option] | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The given options over the declared defaults: every option's value, for checks across options."""
    return {**{option.name: option.default for option in declared or ()}, **given}


def markdown_table(declared: Iterable[Option]) -> str:
    """The docs' table of a kind's options (docs/configuration.md is kept equal to it by a test)."""
    rows = ["| option | value | default | meaning |", "|---|---|---|---|"]
    for option in declared:
        default = "required" if option.required else "-" if option.default is None else f"`{_toml(option.default)}`"
        rows.append(f"| `{option.name}` | {option.wanted} | {default} | {option.doc} |")
    return "\n".join(rows)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


__all__ = ["ENDPOINT", "NOT_NEGATIVE", "Option", "PORT", "POSITIVE", "Rule", "TYPE_NAMES", "at_least",
           "check_table", "has_type", "markdown_table", "one_of", "with_defaults"]
