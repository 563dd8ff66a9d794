"""The role document enterprise teams already write, accepted as-is, with Chamberlain's compatible extensions.

The format (issue 5), in JSON or under `roles:` in chamberlain.yaml:

    {"enterprise_roles": {
        "developer": {"mcp_servers": ["github", "postgres"], "data_classification_access": ["public", "internal"],
                      "session_duration": 240},
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "session_duration": 240,
                  "administrative_functions": true}}}

`mcp_servers` and `data_classification_access` are lists or "*" (everything). `session_duration` is minutes; a role
without one leaves the session lifetime to the tenant's settings.

Extensions (optional): `tools`, `prompts` and `resources`, each mapping a server the role lists to name rules:

    "tools": {"github": {"allow": ["*"], "deny": ["delete_*", "admin_*"]}},
    "resources": {"postgres": {"allow": ["postgres://reports/*"]}}

Patterns are shell globs matched case-sensitively (`fnmatch.fnmatchcase`): tools and prompts by name, resources by
URI (or URI template). Within a role deny wins over allow, and `allow` must be given: an empty list allows nothing
(deny by default). A server without rules of a kind allows everything of that kind it offers.

Unknown keys, wrong types and rules for a server the role does not list are validation errors (with their path);
server names no registered server answers to are reported by `check_servers`, not fatal: the server may be added later.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from chamberlain.store.servers import check_server_name

Kind = Literal["tools", "prompts", "resources"]
KINDS: tuple[Kind, ...] = ("tools", "prompts", "resources")
ANY: Literal["*"] = "*"

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_PATTERN_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _plain_name(what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not _PLAIN_NAME.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: use 1-64 of letters, digits, '.', '_' and '-'")
        return value

    return AfterValidator(check)


def _pattern(value: str) -> str:
    if not value or len(value) > _MAX_PATTERN_LENGTH or _CONTROL.search(value):
        raise ValueError(f"a pattern is 1-{_MAX_PATTERN_LENGTH} characters without control characters")
    return value


RoleName = Annotated[str, _plain_name("role name")]
ServerName = Annotated[str, AfterValidator(check_server_name)]
Classification = Annotated[str, _plain_name("classification")]
Pattern = Annotated[str, AfterValidator(_pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameRules(_Model):
    """Which names of one kind (tools, prompts or resources) a role may use on one server."""

    allow: tuple[Pattern, ...]  # required: an omitted allow must not silently mean "everything"
    deny: tuple[Pattern, ...] = ()


class Role(_Model):
    mcp_servers: tuple[ServerName, ...] | Literal["*"]
    data_classification_access: tuple[Classification, ...] | Literal["*"] = ()
    session_duration: StrictInt | None = Field(None, ge=1, le=7 * 24 * 60, description="minutes")
    administrative_functions: StrictBool = False
    tools: dict[ServerName, NameRules] = Field(default_factory=dict)
    prompts: dict[ServerName, NameRules] = Field(default_factory=dict)
    resources: dict[ServerName, NameRules] = Field(default_factory=dict)

    @field_validator(*KINDS)
    @classmethod
    def _rules_name_listed_servers(cls, rules: dict[str, NameRules], info: ValidationInfo) -> dict[str, NameRules]:
        # A rule for a server the role cannot reach grants nothing: most likely a typo, so say so.
        servers = info.data.get("mcp_servers")  # absent when mcp_servers itself was invalid (already reported)
        if servers is None or servers == ANY:
            return rules
        unlisted = sorted(set(rules) - set(servers))
        if unlisted:
            raise ValueError(f"rules for {', '.join(map(repr, unlisted))}, which this role's mcp_servers does not list")
        return rules

    def grants(self, server: str) -> bool:
        return self.mcp_servers == ANY or server in self.mcp_servers

    def rules(self, kind: Kind) -> dict[str, NameRules]:
        return {"tools": self.tools, "prompts": self.prompts, "resources": self.resources}[kind]


class RolesDocument(_Model):
    enterprise_roles: dict[RoleName, Role]


# A fresh install works: the built-in demo server (chamberlain.demo.server.DEMO_SERVER_NAME; not imported here,
# it would load the MCP SDK with the settings) for developers, everything for admins.
DEFAULT_ROLES = RolesDocument(
    enterprise_roles={
        "admin": Role(mcp_servers=ANY, data_classification_access=ANY, administrative_functions=True),
        "developer": Role(mcp_servers=("demo",), data_classification_access=("public", "internal")),
    }
)


def check_servers(document: RolesDocument, known_server_names: Collection[str]) -> list[str]:
    """One readable line per server name a role uses (in `mcp_servers` or in rules) that no server answers to."""
    known = set(known_server_names)
    problems: list[str] = []
    for role_name, role in sorted(document.enterprise_roles.items()):
        named: set[str] = set() if role.mcp_servers == ANY else set(role.mcp_servers)
        for kind in KINDS:
            named.update(role.rules(kind))
        problems.extend(
            f"role {role_name!r} names MCP server {server!r}, which is not registered"
            for server in sorted(named - known)
        )
    return problems
