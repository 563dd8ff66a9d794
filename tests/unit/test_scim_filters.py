"""SCIM filters (RFC 7644 §3.4.2.2): what Okta and Entra send is parsed and matched; anything else is refused with
an invalidFilter error, never another exception."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chamberlain.scim.errors import INVALID_FILTER, INVALID_PATH, ScimError
from chamberlain.scim.filters import (
    And,
    AttrPath,
    Compare,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    matches,
    parse_filter,
    parse_path,
)

USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "00ujl29u0le5T6Aj10h7",
    "userName": "Isabella.Lopez@Example.com",
    "displayName": "Isabella Lopez",
    "name": {"givenName": "Isabella", "familyName": "Lopez"},
    "emails": [
        {"value": "isabella@example.com", "type": "work", "primary": True},
        {"value": "bella@example.org", "type": "home"},
    ],
    "active": True,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Finance", "employeeNumber": "701"},
    "meta": {"lastModified": "2026-11-28T08:00:00Z"},
}


def test_what_okta_and_entra_send_parses() -> None:
    assert parse_filter('userName eq "isabella@example.com"') == Compare(
        AttrPath(None, "userName"), "eq", "isabella@example.com"
    )
    assert parse_filter('externalId eq "abc"') == Compare(AttrPath(None, "externalId"), "eq", "abc")
    assert parse_filter('emails[type eq "work"].value eq "a@b"') == ValuePath(
        AttrPath(None, "emails"),
        Compare(AttrPath(None, "type"), "eq", "work"),
        Compare(AttrPath(None, "value"), "eq", "a@b"),
    )
    assert parse_filter('userName eq "a" or not (active eq false) and title pr') == Or(
        Compare(AttrPath(None, "userName"), "eq", "a"),
        And(Not(Compare(AttrPath(None, "active"), "eq", False)), Present(AttrPath(None, "title"))),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "isabella.lopez@example.com"', True),  # userName is not caseExact (RFC 7643 §4.1.1)
        ('USERNAME Eq "Isabella.Lopez@Example.com"', True),  # names and operators ignore case
        ('userName eq "isabella"', False),
        ('externalId eq "00UJL29U0LE5T6AJ10H7"', False),  # externalId is caseExact
        ('externalId eq "00ujl29u0le5T6Aj10h7"', True),
        ('displayName eq "Isabella Lopez"', True),
        ('emails[type eq "work"].value eq "isabella@example.com"', True),
        ('emails[type eq "home"].value eq "isabella@example.com"', False),
        ('emails[type eq "work" and primary eq true]', True),
        ('emails.value eq "bella@example.org"', True),
        ('emails eq "bella@example.org"', True),  # a complex attribute compares its value
        ('emails co "example.org"', True),
        ('name.givenName sw "isa" and name.familyName ew "EZ"', True),
        ('name.givenName sw "Lo" or active eq false', False),
        ("active eq true", True),
        ('active eq "true"', False),  # a string is not a boolean
        ("not (active eq true)", False),
        ("title pr", False),
        ("name pr", True),
        ("title eq null", True),
        ('meta.lastModified gt "2026-01-01T00:00:00Z"', True),
        ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "finance"', True),
        ('urn:ietf:params:scim:schemas:core:2.0:User:userName sw "isabella"', True),
        ('userName ne "someone"', True),
        ('(userName eq "x" or userName eq "y") and active eq true', False),
    ],
)
def test_filters_match_as_rfc_7644_says(text: str, expected: bool) -> None:
    assert matches(parse_filter(text), USER) is expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "userName",
        'userName eq "unterminated',
        'userName eq "a" and',
        'userName like "a"',
        "userName eq unquoted",
        'userName eq "a") or (1 eq 1',
        "active gt true",  # §3.4.2.2: no ordering of booleans
        "userName co 3",
        "1userName eq 3",
        'userName eq "a"; DROP TABLE users; --',
        'userName eq "\\x"',  # not a JSON escape
        "(" * 40 + 'userName eq "a"' + ")" * 40,  # deeper than allowed
        'emails[type eq "work"',
        'emails[type eq "work"]value eq "a"',
    ],
)
def test_malformed_filters_are_invalid_filter_errors(text: str) -> None:
    with pytest.raises(ScimError) as refused:
        parse_filter(text)
    assert refused.value.status == 400
    assert refused.value.scim_type == INVALID_FILTER


def test_the_longest_filter_allowed_evaluates() -> None:
    # The most terms a filter of the allowed length holds: evaluation recurses once per term, within the limit.
    longest = " or ".join(["a pr"] * 511 + ["title pr"])
    assert len(longest) <= 4096
    assert matches(parse_filter(longest), USER) is False
    assert matches(parse_filter(longest.replace("title", "name")), USER) is True


def test_patch_paths() -> None:
    assert parse_path('members[value eq "2819c223"]') == PatchPath(
        AttrPath(None, "members"), Compare(AttrPath(None, "value"), "eq", "2819c223")
    )
    assert parse_path('emails[type eq "work"].value') == PatchPath(
        AttrPath(None, "emails"), Compare(AttrPath(None, "type"), "eq", "work"), "value"
    )
    assert parse_path("name.givenName") == PatchPath(AttrPath(None, "name", "givenName"))
    extension = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert parse_path(extension, extension_schemas=frozenset({extension.lower()})) == PatchPath(
        AttrPath(None, extension)
    )
    with pytest.raises(ScimError) as refused:
        parse_path("members[value eq")
    assert refused.value.scim_type == INVALID_PATH


FILTER_WORDS = st.sampled_from(
    [
        "userName",
        "emails",
        "value",
        "type",
        "eq",
        "ne",
        "co",
        "pr",
        "gt",
        "and",
        "or",
        "not",
        "true",
        "null",
        "1.5",
        "(",
        ")",
        "[",
        "]",
        ".value",
        '"x"',
        '"\\u00e9"',
        '"\\',
        '"',
        " ",
        "urn:a:b",
        "-",
        "\x00",
    ]
)


def refusal(parse: Callable[[str], Any], text: str) -> str | None:
    """The scimType of the error parsing `text` raises, or None when it parses (and then evaluates)."""
    try:
        found = parse(text)
    except ScimError as refused:
        return refused.scim_type
    if not isinstance(found, PatchPath):
        matches(found, USER)  # whatever parses can be evaluated
    return None


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(FILTER_WORDS, max_size=25).map(" ".join)))
def test_the_parser_never_raises_anything_but_invalid_filter(text: str) -> None:
    assert refusal(parse_filter, text) in (None, INVALID_FILTER)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(FILTER_WORDS, max_size=20).map(" ".join)))
def test_the_path_parser_never_raises_anything_but_invalid_path(text: str) -> None:
    # A path's value filter is a filter: its errors are invalidFilter.
    assert refusal(parse_path, text) in (None, INVALID_PATH, INVALID_FILTER)
