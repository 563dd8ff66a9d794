"""SCIM PATCH (RFC 7644 §3.5.2) as Okta and Microsoft Entra send it."""

from __future__ import annotations

from typing import Any

import pytest

from chamberlain.scim.errors import INVALID_SYNTAX, NO_TARGET, ScimError
from chamberlain.scim.patch import PATCH_OP, apply_patch
from chamberlain.scim.schema import ENTERPRISE_USER, EXTENSION_SCHEMAS

USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "u1",
    "userName": "isabella@example.com",
    "name": {"givenName": "Isabella", "familyName": "Lopez"},
    "emails": [{"value": "isabella@example.com", "type": "work", "primary": True}],
    "active": True,
}


def patched(*operations: dict[str, Any], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"schemas": [PATCH_OP], "Operations": list(operations)}
    return apply_patch(resource or USER, body, extension_schemas=EXTENSION_SCHEMAS)


def test_okta_deactivates_with_a_path_less_value() -> None:
    # Okta's documented deactivation: no path, the attributes as the value.
    result = patched({"op": "replace", "value": {"active": False}})
    assert result["active"] is False
    assert USER["active"] is True  # the input is not changed


def test_entra_replace_capitalised_with_paths_and_string_booleans() -> None:
    result = patched(
        {"op": "Replace", "path": "displayName", "value": "Bella Lopez"},
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "bella@example.com"},
        {"op": "Replace", "path": "name.familyName", "value": "López"},
        {"op": "Add", "path": f"{ENTERPRISE_USER}:department", "value": "Finance"},
        {"op": "Replace", "path": "active", "value": "False"},
    )
    assert result["displayName"] == "Bella Lopez"
    assert result["emails"] == [{"value": "bella@example.com", "type": "work", "primary": True}]
    assert result["name"] == {"givenName": "Isabella", "familyName": "López"}
    assert result[ENTERPRISE_USER] == {"department": "Finance"}
    assert result["active"] == "False"  # users.py reads Entra's string booleans


def test_entra_path_less_values_name_sub_attributes_by_path() -> None:
    result = patched({"op": "Replace", "value": {"name.givenName": "Bella", "USERNAME": "bella@example.com"}})
    assert result["name"]["givenName"] == "Bella"
    assert result["userName"] == "bella@example.com"  # attribute names ignore case; the stored name is kept


def test_an_equality_filter_describes_the_value_to_add_when_none_matches() -> None:
    result = patched({"op": "add", "path": 'emails[type eq "home"].value', "value": "bella@example.org"})
    assert result["emails"][1] == {"type": "home", "value": "bella@example.org"}
    with pytest.raises(ScimError) as refused:
        patched({"op": "replace", "path": 'emails[value co "zz"].type', "value": "home"})
    assert refused.value.scim_type == NO_TARGET


GROUP: dict[str, Any] = {"id": "g1", "displayName": "Engineering", "members": [{"value": "u1"}, {"value": "u2"}]}


def test_group_members_added_and_removed_as_okta_and_entra_do() -> None:
    added = patched(
        {"op": "add", "path": "members", "value": [{"value": "u3", "display": "c"}, {"value": "u1"}]}, resource=GROUP
    )
    assert [member["value"] for member in added["members"]] == ["u1", "u2", "u3"]
    okta = patched({"op": "remove", "path": 'members[value eq "u2"]'}, resource=GROUP)
    assert okta["members"] == [{"value": "u1"}]
    entra = patched({"op": "Remove", "path": "members", "value": [{"value": "u1"}]}, resource=GROUP)
    assert entra["members"] == [{"value": "u2"}]
    everyone = patched({"op": "remove", "path": "members"}, resource=GROUP)
    assert "members" not in everyone
    renamed = patched({"op": "replace", "value": {"id": "g1", "displayName": "Platform"}}, resource=GROUP)
    assert renamed["displayName"] == "Platform"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"Operations": [{"op": "add", "path": "title", "value": "x"}]},  # no schemas
        {"schemas": [PATCH_OP], "Operations": []},
        {"schemas": [PATCH_OP], "Operations": [{"op": "move", "path": "title"}]},
        {"schemas": [PATCH_OP], "Operations": ["add"]},
    ],
)
def test_malformed_requests_are_invalid_syntax(body: Any) -> None:
    with pytest.raises(ScimError) as refused:
        apply_patch(USER, body, extension_schemas=EXTENSION_SCHEMAS)
    assert (refused.value.status, refused.value.scim_type) == (400, INVALID_SYNTAX)


def test_remove_without_a_path_is_no_target() -> None:
    with pytest.raises(ScimError) as refused:
        patched({"op": "remove"})
    assert refused.value.scim_type == NO_TARGET
