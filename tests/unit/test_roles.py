"""The role document: issue 5's format accepted as-is, the extensions, and every mistake reported with its path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chamberlain.demo.server import DEMO_SERVER_NAME
from chamberlain.policy.roles import (
    ANY,
    DEFAULT_ROLES,
    Budget,
    InvalidRoles,
    NameRules,
    Problem,
    Role,
    RolesDocument,
    check_servers,
    parse_roles,
)
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
        (one_role(model=["claude-*"]), ("enterprise_roles", "developer", "model")),
        (
            one_role(models=["claude-*"], budget={"monthly_usd": 10, "daily_usd": 1}),
            ("enterprise_roles", "developer", "budget", "daily_usd"),
        ),
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


# -- the examples shipped in examples/ ------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_shipped_example_is_the_issue_example_verbatim() -> None:
    assert json.loads((EXAMPLES / "roles.json").read_text()) == json.loads(ISSUE_EXAMPLE)


def test_the_extended_example_uses_every_extension() -> None:
    document = RolesDocument.model_validate_json((EXAMPLES / "roles-extended.json").read_text())
    used = {key for role in document.enterprise_roles.values() for key in role.model_fields_set}
    assert used == set(Role.model_fields)
    roles = document.enterprise_roles
    assert {role.mfa for role in roles.values()} == {"off", "optional", "enforced"}
    assert {role.audit_access for role in roles.values() if "audit_access" in role.model_fields_set} == {"none", "read"}
    assert roles["senior_developer"].models == ANY
    assert roles["developer"].budget == Budget(monthly_usd=200)


# -- the extensions ---------------------------------------------------------------------------------------------------


def test_extensions_have_safe_defaults() -> None:
    role = Role.model_validate({"mcp_servers": ["github"]})
    assert role.models == ()  # no model access unless granted
    assert role.budget is None
    assert role.mfa == "optional"
    assert role.audit_access is None
    assert not role.reads_audit
    assert Role.model_validate({"mcp_servers": "*", "administrative_functions": True}).reads_audit
    assert not Role.model_validate(
        {"mcp_servers": "*", "administrative_functions": True, "audit_access": "none"}
    ).reads_audit
    assert Role.model_validate({"mcp_servers": [], "audit_access": "read"}).reads_audit


def test_models_and_budget_are_read() -> None:
    role = Role.model_validate(
        {"mcp_servers": [], "models": ["claude-sonnet-*", "claude-haiku-4-5"], "budget": {"monthly_usd": 12.5}}
    )
    assert role.models == ("claude-sonnet-*", "claude-haiku-4-5")
    assert role.budget == Budget(monthly_usd=12.5)
    assert Role.model_validate({"mcp_servers": [], "models": "*", "budget": {"monthly_usd": 0}}).models == ANY
    whole_dollars = Role.model_validate_json('{"mcp_servers": [], "models": "*", "budget": {"monthly_usd": 100}}')
    assert whole_dollars.budget == Budget(monthly_usd=100.0)


@pytest.mark.parametrize(
    ("role", "path", "message"),
    [
        ({"models": "claude-*"}, ("models",), 'must be a list, or "*" for all'),
        ({"models": [""]}, ("models", 0), "a pattern is 1-1024 characters without control characters"),
        ({"models": ["*"], "budget": 100}, ("budget",), "must be a mapping (an object)"),
        ({"models": ["*"], "budget": {}}, ("budget", "monthly_usd"), "required"),
        (
            {"models": ["*"], "budget": {"monthly_usd": "100"}},
            ("budget", "monthly_usd"),
            "Input should be a valid number",
        ),
        (
            {"models": ["*"], "budget": {"monthly_usd": True}},
            ("budget", "monthly_usd"),
            "Input should be a valid number",
        ),
        ({"models": ["*"], "budget": {"monthly_usd": -1}}, ("budget", "monthly_usd"), "greater than or equal to 0"),
        (
            {"models": ["*"], "budget": {"monthly_usd": float("inf")}},
            ("budget", "monthly_usd"),
            "Input should be a finite number",
        ),
        (
            {"budget": {"monthly_usd": 10}},
            ("budget",),
            "a budget applies to the role's models, and this role lists none",
        ),
        ({"models": [], "budget": {"monthly_usd": 10}}, ("budget",), "this role lists none"),
        ({"mfa": "required"}, ("mfa",), "Input should be 'off', 'optional' or 'enforced'"),
        ({"mfa": False}, ("mfa",), 'in YAML write "off" in quotes'),
        ({"audit_access": "write"}, ("audit_access",), "Input should be 'none' or 'read'"),
        ({"audit_access": True}, ("audit_access",), "Input should be 'none' or 'read'"),
    ],
)
def test_extension_mistakes_are_reported_with_their_path(
    role: dict[str, Any], path: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(InvalidRoles) as raised:
        parse_roles({"enterprise_roles": {"dev": {"mcp_servers": [], **role}}})
    [problem] = raised.value.problems
    assert problem.path == ("enterprise_roles", "dev", *path)
    assert message in problem.message


def test_a_yaml_off_gets_a_hint_from_the_settings_file_too(tmp_path: Path) -> None:
    (tmp_path / "chamberlain.yaml").write_text(
        "roles:\n  enterprise_roles:\n    kiosk:\n      mcp_servers: [demo]\n      mfa: off\n"
    )
    with pytest.raises(SettingsError, match="quotes"):
        load_settings(data_dir=tmp_path, environ={})


# -- problems as the document spells them -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            one_role(mcp_servers=["github", "Bad"]),  # pydantic says mcp_servers.list.1: "list" is its branch tag
            ["enterprise_roles.developer.mcp_servers.1: invalid server name 'Bad'"],
        ),
        (one_role(mcp_servers="github"), ['enterprise_roles.developer.mcp_servers: must be a list, or "*" for all']),
        (one_role(mcp_servers=3), ['enterprise_roles.developer.mcp_servers: must be a list, or "*" for all']),
        (
            {"enterprise_roles": {"dev ops": {"mcp_servers": []}}},  # pydantic says `dev ops.[key]`
            ["enterprise_roles.dev ops: invalid role name 'dev ops'"],
        ),
        ({"enterprise_roles": {"dev": {}}}, ["enterprise_roles.dev.mcp_servers: required"]),
        (one_role(tools={"github": {"allow": "*"}}), ["enterprise_roles.developer.tools.github.allow: must be a list"]),
        (one_role(sesion_duration=5), ["enterprise_roles.developer.sesion_duration: unknown key"]),
        ([], ["(document): must be a mapping (an object)"]),
        ({}, ["enterprise_roles: required"]),
    ],
)
def test_problems_name_the_path_as_written(document: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidRoles) as raised:
        parse_roles(document)
    reported = [str(problem) for problem in raised.value.problems]
    assert len(reported) == len(expected)
    for line, start in zip(reported, expected, strict=True):
        assert line.startswith(start), line


def test_every_problem_is_reported_not_just_the_first() -> None:
    with pytest.raises(InvalidRoles) as raised:
        parse_roles(
            {
                "enterprise_roles": {
                    "a": {"mcp_servers": ["github"], "colour": "red"},
                    "b": {"mcp_servers": ["github"], "session_duration": 0},
                    "c": {"mcp_servers": ["github"], "mfa": "sometimes"},
                }
            }
        )
    assert [problem.path for problem in raised.value.problems] == [
        ("enterprise_roles", "a", "colour"),
        ("enterprise_roles", "b", "session_duration"),
        ("enterprise_roles", "c", "mfa"),
    ]
    assert str(raised.value).count("\n") == 2


def test_a_problem_prints_as_path_and_message() -> None:
    assert (
        str(Problem(("enterprise_roles", "dev", "mcp_servers", 0), "bad")) == "enterprise_roles.dev.mcp_servers.0: bad"
    )
    assert str(Problem((), "must be a mapping")) == "(document): must be a mapping"


# -- storage round trip -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["roles.json", "roles-extended.json"])
def test_documents_round_trip_through_json_as_they_are_stored(name: str) -> None:
    document = RolesDocument.model_validate_json((EXAMPLES / name).read_text())
    stored = document.model_dump(mode="json", exclude_unset=True)
    assert RolesDocument.model_validate(stored) == document
    assert stored == json.loads((EXAMPLES / name).read_text())  # exactly what was written: nothing added


def test_built_in_documents_round_trip_too() -> None:
    stored = json.loads(json.dumps(DEFAULT_ROLES.model_dump(mode="json", exclude_unset=True)))
    assert RolesDocument.model_validate(stored) == DEFAULT_ROLES
