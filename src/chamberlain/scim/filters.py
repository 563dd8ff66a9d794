"""SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2): a small recursive-descent parser and an evaluator
over resources as JSON objects. Nothing here builds SQL or evaluates code: a filter is data, matched in Python.

Every failure is a ScimError with scimType invalidFilter (or invalidPath for a PATCH path): never another
exception, whatever the text (tests/unit/test_scim_filters.py checks that with Hypothesis).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from chamberlain.scim.errors import INVALID_FILTER, INVALID_PATH, ScimError, invalid

MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 16  # nesting of parentheses, `not` and value filters: deeper is refused, not a RecursionError

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
_CORE_SCHEMAS = frozenset({CORE_USER.lower(), CORE_GROUP.lower()})
# RFC 7643 §2.1 / §4.1: attributes compared case-sensitively ("caseExact"); all other strings ignore case.
_CASE_EXACT = frozenset({"id", "externalid", "$ref"})

COMPARISONS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_ORDERINGS = frozenset({"gt", "ge", "lt", "le"})
_STRING_ONLY = frozenset({"co", "sw", "ew"})

# RFC 7644 §3.4.2.2 ABNF: attrPath = [URI ":"] ATTRNAME *1subAttr; ATTRNAME = ALPHA *(nameChar).
_NAME = r"[A-Za-z$][A-Za-z0-9_$-]*"
_ATTR_PATH = re.compile(rf"(?:(urn:[A-Za-z0-9.:_-]+):)?({_NAME})(?:\.({_NAME}))?", re.ASCII)
_SUB_ATTR = re.compile(rf"\.({_NAME})", re.ASCII)
_TOKEN = re.compile(r'\s*(?:(?P<punct>[()\[\]])|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()\[\]"]+))', re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)

Value = str | int | float | bool | None


@dataclass(frozen=True)
class AttrPath:
    schema: str | None  # an extension schema URN; None for the core schema
    name: str
    sub: str | None = None


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str
    value: Value


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Not:
    inner: Filter


@dataclass(frozen=True)
class ValuePath:
    """`emails[type eq "work"]`, optionally followed by a comparison of a sub-attribute of the matched values
    (`emails[type eq "work"].value eq "x"`, what some clients send)."""

    path: AttrPath
    inner: Filter
    then: Compare | Present | None = None


Filter = Compare | Present | And | Or | Not | ValuePath


@dataclass(frozen=True)
class PatchPath:
    """A PATCH target (RFC 7644 §3.5.2): `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`."""

    attr: AttrPath
    filter: Filter | None = None
    sub: str | None = None


def parse_filter(text: str) -> Filter:
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid("the filter is too long", INVALID_FILTER)
    parser = _Parser(text, INVALID_FILTER)
    found = parser.expression(0)
    parser.end()
    return found


def parse_path(text: str, *, extension_schemas: frozenset[str] = frozenset()) -> PatchPath:
    """A PATCH path; a bare extension schema URN names that extension's object."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid("the path is too long", INVALID_PATH)
    if text.lower() in extension_schemas:
        return PatchPath(AttrPath(None, text))
    parser = _Parser(text, INVALID_PATH)
    attr = parser.attr_path(parser.word("an attribute"))
    if not parser.at("["):
        parser.end()
        return PatchPath(attr)
    if attr.sub is not None:
        raise invalid("a value filter applies to an attribute, not to a sub-attribute", INVALID_PATH)
    parser.next()
    inner = parser.expression(1)
    parser.expect("]")
    sub = parser.sub_attr()
    parser.end()
    return PatchPath(attr, inner, sub)


class _Parser:
    def __init__(self, text: str, scim_type: str) -> None:
        self._scim_type = scim_type
        self._tokens = list(self._tokenize(text))
        self._position = 0

    def _tokenize(self, text: str) -> Iterator[tuple[str, str]]:
        position = 0
        while position < len(text):
            if text[position:].isspace():
                return
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                raise self._error("the text has an unterminated string")
            position = match.end()
            yield match.lastgroup, match.group(match.lastgroup)

    def _error(self, detail: str) -> ScimError:
        return invalid(detail, self._scim_type)

    def at(self, punct: str) -> bool:
        return self._position < len(self._tokens) and self._tokens[self._position] == ("punct", punct)

    def at_keyword(self, keyword: str) -> bool:
        if self._position >= len(self._tokens):
            return False
        kind, text = self._tokens[self._position]
        return kind == "word" and text.lower() == keyword

    def next(self) -> tuple[str, str]:
        if self._position >= len(self._tokens):
            raise self._error("the text ends too early")
        token = self._tokens[self._position]
        self._position += 1
        return token

    def expect(self, punct: str) -> None:
        if self.next() != ("punct", punct):
            raise self._error(f"expected {punct!r}")

    def word(self, what: str) -> str:
        kind, text = self.next()
        if kind != "word":
            raise self._error(f"expected {what}")
        return text

    def end(self) -> None:
        if self._position != len(self._tokens):
            raise self._error("unexpected text after the end")

    # filter = term *("or" term); term = factor *("and" factor): `and` binds tighter (§3.4.2.2 Table 4).
    def expression(self, depth: int) -> Filter:
        return self._joined("or", Or, lambda: self._term(depth))

    def _term(self, depth: int) -> Filter:
        return self._joined("and", And, lambda: self._factor(depth))

    def _joined(self, keyword: str, join: Callable[[Filter, Filter], Filter], operand: Callable[[], Filter]) -> Filter:
        """Operands separated by `keyword`, grouped from the left."""
        found = operand()
        while self.at_keyword(keyword):
            self.next()
            found = join(found, operand())
        return found

    def _factor(self, depth: int) -> Filter:
        if depth >= MAX_DEPTH:
            raise self._error("the filter is nested too deeply")
        if self.at("("):
            self.next()
            return self._enclosed(depth, ")")
        if self.at_keyword("not"):
            self.next()
            self.expect("(")
            return Not(self._enclosed(depth, ")"))
        path = self.attr_path(self.word("an attribute"))
        if self.at("["):
            self.next()
            inner = self._enclosed(depth, "]")
            sub = self.sub_attr()
            if sub is None:
                return ValuePath(path, inner)
            return ValuePath(path, inner, self._comparison(AttrPath(None, sub)))
        return self._comparison(path)

    def _enclosed(self, depth: int, close: str) -> Filter:
        """The filter after an opening "(" or "[" (already read), up to its `close`: one level deeper."""
        inner = self.expression(depth + 1)
        self.expect(close)
        return inner

    def _comparison(self, path: AttrPath) -> Compare | Present:
        op = self.word("an operator").lower()
        if op == "pr":
            return Present(path)
        if op not in COMPARISONS:
            raise self._error(f"unknown operator {op!r}")
        value = self._value()
        if op in _STRING_ONLY and not isinstance(value, str):
            raise self._error(f"{op} compares strings")
        if op in _ORDERINGS and (isinstance(value, bool) or value is None):
            raise self._error(f"{op} does not apply to booleans or null")  # §3.4.2.2
        return Compare(path, op, value)

    def _value(self) -> Value:
        kind, text = self.next()
        if kind == "string":
            try:
                decoded = json.loads(text)
            except ValueError:
                raise self._error("a string value is not valid JSON") from None
            return str(decoded)
        if kind == "word":
            keyword = {"true": True, "false": False, "null": None}
            if text.lower() in keyword:
                return keyword[text.lower()]
            if _NUMBER.fullmatch(text):
                number = float(text)
                return int(text) if number.is_integer() and re.fullmatch(r"-?[0-9]+", text) else number
        raise self._error("expected a value: a string, number, true, false or null")

    def attr_path(self, text: str) -> AttrPath:
        match = _ATTR_PATH.fullmatch(text)
        if match is None:
            raise self._error("not an attribute name")
        schema, name, sub = match.groups()
        if schema is not None and schema.lower() in _CORE_SCHEMAS:
            schema = None
        return AttrPath(schema, name, sub)

    def sub_attr(self) -> str | None:
        if self._position < len(self._tokens) and self._tokens[self._position][0] == "word":
            match = _SUB_ATTR.fullmatch(self._tokens[self._position][1])
            if match is None:
                raise self._error("expected a sub-attribute after ']'")
            self._position += 1
            return match.group(1)
        return None


# -- evaluation -------------------------------------------------------------------------------------------------------


def lookup(container: Mapping[str, Any], name: str) -> Any:
    """Attribute names are case-insensitive (RFC 7643 §2.1)."""
    if name in container:
        return container[name]
    lowered = name.lower()
    for key, value in container.items():
        if key.lower() == lowered:
            return value
    return None


def matches(found: Filter, resource: Mapping[str, Any]) -> bool:
    if isinstance(found, And):
        return matches(found.left, resource) and matches(found.right, resource)
    if isinstance(found, Or):
        return matches(found.left, resource) or matches(found.right, resource)
    if isinstance(found, Not):
        return not matches(found.inner, resource)
    if isinstance(found, ValuePath):
        elements = [item for item in _items(resource, found.path) if isinstance(item, Mapping)]
        return any(
            matches(found.inner, element) and (found.then is None or matches(found.then, element))
            for element in elements
        )
    if isinstance(found, Present):
        present = _items(resource, found.path) if found.path.sub is None else _values(resource, found.path)
        return any(value not in ("", [], {}) for value in present)
    values = _values(resource, found.path)
    if found.value is None:  # `attr eq null`: the attribute has no value; `ne null`: it has one
        return not values if found.op == "eq" else bool(values)
    exact = found.path.name.lower() in _CASE_EXACT or (found.path.sub or "").lower() in _CASE_EXACT
    if found.op == "ne":
        return not any(_compare("eq", value, found.value, exact) for value in values)
    return any(_compare(found.op, value, found.value, exact) for value in values)


def _items(resource: Mapping[str, Any], path: AttrPath) -> list[Any]:
    container: Any = resource
    if path.schema is not None:
        container = lookup(resource, path.schema)
        if not isinstance(container, Mapping):
            return []
    value = lookup(container, path.name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _values(resource: Mapping[str, Any], path: AttrPath) -> list[Any]:
    values: list[Any] = []
    for item in _items(resource, path):
        if path.sub is not None:
            value = lookup(item, path.sub) if isinstance(item, Mapping) else None
        else:
            # A complex attribute compared as a whole compares its `value` sub-attribute (§3.4.2.2).
            value = lookup(item, "value") if isinstance(item, Mapping) else item
        if isinstance(value, list):
            values.extend(value)
        elif value is not None:
            values.append(value)
    return values


def _compare(op: str, actual: Any, expected: Value, exact: bool) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and op == "eq" and actual is expected
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return False
        left, right = (actual, expected) if exact else (actual.casefold(), expected.casefold())
        return _ordered(op, left, right)
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return _ordered(op, actual, expected)
    return False


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "co":
        return bool(right in left)
    if op == "sw":
        return bool(left.startswith(right))
    if op == "ew":
        return bool(left.endswith(right))
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)
