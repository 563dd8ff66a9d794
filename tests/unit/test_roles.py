"""The role document: issue 5's format accepted as-is, the rule extensions, and every mistake reported with its path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chamberlain.demo.server import DEMO_SERVER_NAME
from chamberlain.policy.roles import ANY, DEFAULT_ROLES, NameRules, Role, RolesDocument, check_servers
from chamberlain.settings import SettingsError, load_settings

# Issue 5's example, byte for byte.
ISSUE_EXAMPLE = """
{
  "enterprise_roles": {
    "developer": {
      "mcp_servers": ["github", "postgres", "slack"],
      "data_classification_access": ["public", "internal"],
      "session_duration": 240
    },
    "senior_developer": {
      "mcp_servers": ["github", "postgres", "slack", "aws", "terraform"],
      "data_classification_access": ["public", "internal", "confidential"],
      "session_duration": 480
    },
    "admin": {
      "mcp_servers": "*",
      "data_classification_access": "*",
      "session_duration": 240,
      "administrative_functions": true
    }
  }
}
"""


def errors(document: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """(path, error type) of every problem pydantic reports for the document."""
    with pytest.raises(ValidationError) as raised:
        RolesDocument.model_validate(document)
    return [(error["loc"], error["type"]) for error in raised.value.errors()]


def one_role(**role: Any) -> dict[str, Any]:
    return {"enterprise_roles": {"developer": {"mcp_servers": ["github"], **role}}}


def test_issue_example_validates_as_is_from_json() -> None:
    document = RolesDocument.model_validate_json(ISSUE_EXAMPLE)
    roles = document.enterprise_roles
    assert roles["developer"].mcp_servers == ("github", "postgres", "slack")
    assert roles["developer"].data_classification_access == ("public", "internal")
    assert roles["senior_developer"].session_duration == 480
    assert roles["admin"].mcp_servers == ANY
    assert roles["admin"].data_classification_access == ANY
    assert roles["admin"].administrative_functions
    assert not roles["developer"].administrative_functions


def test_issue_example_validates_from_python_data_as_yaml_gives_it() -> None:
    assert RolesDocument.model_validate(json.loads(ISSUE_EXAMPLE)) == RolesDocument.model_validate_json(ISSUE_EXAMPLE)


def test_rule_extensions_are_read() -> None:
    document = RolesDocument.model_validate(
        one_role(
            tools={"github": {"allow": ["*"], "deny": ["delete_*"]}},
            prompts={"github": {"allow": []}},
            resources={"github": {"allow": ["repo://public/*"]}},
        )
    )
    role = document.enterprise_roles["developer"]
    assert role.rules("tools") == {"github": NameRules(allow=("*",), deny=("delete_*",))}
    assert role.rules("prompts") == {"github": NameRules(allow=())}
    assert role.rules("resources")["github"].allow == ("repo://public/*",)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"enterprise_roles": {}, "roles": {}}, ("roles",)),
        (one_role(mcp_server=["github"]), ("enterprise_roles", "developer", "mcp_server")),
        (
            one_role(tools={"github": {"allow": ["*"], "denied": ["x"]}}),
            ("enterprise_roles", "developer", "tools", "github", "denied"),
        ),
        (one_role(budget=10), ("enterprise_roles", "developer", "budget")),
    ],
)
def test_unknown_keys_are_reported_with_their_path(document: Any, path: tuple[str, ...]) -> None:
    assert errors(document) == [(path, "extra_forbidden")]


def test_unknown_key_in_the_settings_file_names_the_key_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "chamberlain.yaml"
    path.write_text(
        "roles:\n  enterprise_roles:\n    developer:\n      mcp_servers: [demo]\n      sesion_duration: 60\n"
    )
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={})
    assert str(raised.value) == f"{path}:5: unknown setting 'roles.enterprise_roles.developer.sesion_duration'"


@pytest.mark.parametrize(
    ("role", "field"),
    [
        ({"mcp_servers": "github"}, "mcp_servers"),  # a bare string other than "*"
        ({"mcp_servers": ["github"], "data_classification_access": "public"}, "data_classification_access"),
        ({"mcp_servers": ["github"], "session_duration": "240"}, "session_duration"),
        ({"mcp_servers": ["github"], "session_duration": 240.5}, "session_duration"),
        ({"mcp_servers": ["github"], "session_duration": 0}, "session_duration"),
        ({"mcp_servers": ["github"], "session_duration": True}, "session_duration"),
        ({"mcp_servers": ["github"], "administrative_functions": "yes"}, "administrative_functions"),
        ({"mcp_servers": ["github"], "administrative_functions": 1}, "administrative_functions"),
        ({"mcp_servers": ["github"], "tools": {"github": {"allow": "*"}}}, "tools"),
        ({"mcp_servers": ["github"], "tools": {"github": ["*"]}}, "tools"),
    ],
)
def test_wrong_types_are_refused(role: dict[str, Any], field: str) -> None:
    reported = errors({"enterprise_roles": {"developer": role}})
    assert reported
    assert all(path[:3] == ("enterprise_roles", "developer", field) for path, _ in reported)


def test_a_role_must_say_which_servers_it_reaches() -> None:
    assert errors({"enterprise_roles": {"developer": {"session_duration": 60}}}) == [
        (("enterprise_roles", "developer", "mcp_servers"), "missing")
    ]


def test_allow_is_required_so_a_deny_only_rule_cannot_mean_everything() -> None:
    assert errors(one_role(tools={"github": {"deny": ["delete_*"]}})) == [
        (("enterprise_roles", "developer", "tools", "github", "allow"), "missing")
    ]


@pytest.mark.parametrize(
    "document",
    [
        {"enterprise_roles": {"dev ops": {"mcp_servers": []}}},
        {"enterprise_roles": {"": {"mcp_servers": []}}},
        one_role(mcp_servers=["GitHub"]),  # server names are lower case: this could never match
        one_role(mcp_servers=["*"]),  # "*" is the whole value, not a list item
        one_role(mcp_servers=["../admin"]),
        one_role(data_classification_access=["top secret"]),
        one_role(tools={"git hub": {"allow": ["*"]}}),
        one_role(tools={"github": {"allow": [""]}}),
        one_role(tools={"github": {"allow": ["a\nb"]}}),
        one_role(tools={"github": {"allow": ["x" * 1025]}}),
    ],
)
def test_names_and_patterns_must_be_plain(document: Any) -> None:
    assert errors(document)


def test_rules_may_only_name_servers_the_role_lists() -> None:
    assert errors(one_role(tools={"slack": {"allow": ["*"]}})) == [
        (("enterprise_roles", "developer", "tools"), "value_error")
    ]
    assert errors(one_role(resources={"slack": {"allow": ["*"]}})) == [
        (("enterprise_roles", "developer", "resources"), "value_error")
    ]


def test_rules_may_name_any_server_when_the_role_reaches_all() -> None:
    role = Role.model_validate({"mcp_servers": "*", "tools": {"slack": {"allow": ["read_*"]}}})
    assert role.grants("slack")
    assert role.grants("anything")


def test_star_forms() -> None:
    role = Role.model_validate({"mcp_servers": "*", "data_classification_access": "*"})
    assert role.mcp_servers == ANY
    assert role.data_classification_access == ANY
    listed = Role.model_validate({"mcp_servers": ["github"]})
    assert listed.grants("github")
    assert not listed.grants("slack")
    assert listed.data_classification_access == ()  # nothing unless granted


def test_documents_are_frozen() -> None:
    role = DEFAULT_ROLES.enterprise_roles["developer"]
    with pytest.raises(ValidationError):
        role.administrative_functions = True  # type: ignore[misc]


def test_default_roles_let_a_fresh_install_work() -> None:
    admin = DEFAULT_ROLES.enterprise_roles["admin"]
    developer = DEFAULT_ROLES.enterprise_roles["developer"]
    assert admin.administrative_functions
    assert admin.grants(DEMO_SERVER_NAME)
    assert admin.grants("any-server")
    assert developer.grants(DEMO_SERVER_NAME)
    assert developer.mcp_servers == (DEMO_SERVER_NAME,)
    assert not developer.administrative_functions


def test_check_servers_reports_unknown_servers_in_lists_and_rules() -> None:
    document = RolesDocument.model_validate_json(ISSUE_EXAMPLE)
    assert check_servers(document, {"github", "postgres", "slack", "aws"}) == [
        "role 'senior_developer' names MCP server 'terraform', which is not registered"
    ]
    with_rules = RolesDocument.model_validate(
        {"enterprise_roles": {"ops": {"mcp_servers": "*", "tools": {"jira": {"allow": ["*"]}}}}}
    )
    assert check_servers(with_rules, ["github"]) == ["role 'ops' names MCP server 'jira', which is not registered"]


def test_check_servers_is_quiet_when_every_name_is_known() -> None:
    document = RolesDocument.model_validate_json(ISSUE_EXAMPLE)
    assert check_servers(document, ["github", "postgres", "slack", "aws", "terraform"]) == []
    assert check_servers(DEFAULT_ROLES, [DEMO_SERVER_NAME]) == []
