"""The role document enterprise teams already write, accepted as-is, with Chamberlain's compatible extensions.

The format (issue 5), in JSON or YAML (`chamberlain roles import FILE`, or under `roles:` in chamberlain.yaml):

    {"enterprise_roles": {
        "developer": {"mcp_servers": ["github", "postgres"], "data_classification_access": ["public", "internal"],
                      "session_duration": 240},
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "session_duration": 240,
                  "administrative_functions": true}}}

`mcp_servers` and `data_classification_access` are lists or "*" (everything); a role without
`data_classification_access` is cleared for no classification. `session_duration` is minutes; a role without one
leaves the session lifetime to the tenant's settings. `administrative_functions` (default false) lets the role's
users manage their tenant (the admin API and console).

Extensions, all optional, so the issue's document is valid unchanged (examples/roles-extended.json uses them all):

- `tools`, `prompts` and `resources`, each mapping a server the role lists to name rules:

      "tools": {"github": {"allow": ["*"], "deny": ["delete_*", "admin_*"]}},
      "resources": {"postgres": {"allow": ["postgres://reports/*"]}}

  Patterns are shell globs matched case-sensitively (`fnmatch.fnmatchcase`): tools and prompts by name, resources
  by URI (or URI template). Within a role deny wins over allow, and `allow` must be given: an empty list allows
  nothing (deny by default). A server without rules of a kind allows everything of that kind it offers.
- `models`: the model ids the role may use through the LLM proxy, as globs (`["claude-sonnet-*", "claude-haiku-*"]`)
  or "*". Absent means none: spending money is granted explicitly, and `administrative_functions` does not imply it
  (managing the gateway is not an entitlement to its models).
- `budget`: `{"monthly_usd": 200}`, the most one user of the role may spend through the LLM proxy in a calendar
  month. Only meaningful with `models` (a budget on a role that lists no models is an error). A role that grants
  models without a budget leaves its users uncapped by role (the tenant's quotas still apply).
- `mfa`: "off" (the role's users are not asked to enrol a second factor), "optional" (the default: users may enrol,
  and one who has a factor is always asked for it) or "enforced" (a user without a second factor must enrol before
  the login completes). No value ever skips a factor a user has already enrolled.
- `audit_access`: "none" or "read" (the audit log, its verification and the compliance reports, read-only). Unset,
  it is "read" for an administrative role and "none" otherwise; a security or auditor role sets "read" without
  `administrative_functions`, and an administrative role may set "none" to keep duties apart.

A user with several roles (`Policy.profile`) gets the union of what they grant: servers, classifications, tools
(per server, any granting role's rules may permit a name), models; administrative and audit reading when any role
grants them. Limits take the other direction where the issue says so or where it is the safer reading:
- the SHORTEST `session_duration` of the roles that set one (the issue's rule: a session lives as long as its most
  sensitive role allows);
- the STRICTEST `mfa` (enforced > optional > off; "off" for no defined role at all, so a role only ever adds to
  it): a second factor required by one role protects all of them;
- the LARGEST `budget` among the roles that grant models, and no cap when one of those has none: a budget belongs
  to the entitlement that grants models, so holding a second, more generous role must not shrink it (a sum would
  multiply a cap with every role a user collects).
Role names the document does not define grant nothing.

Unknown keys, wrong types and rules for a server the role does not list are validation errors (with their path:
`validation_problems` turns pydantic's locations into the document's own); server names no registered server answers
to are reported by `check_servers`, not fatal: the server may be added later.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from chamberlain.store.servers import check_server_name

Kind = Literal["tools", "prompts", "resources"]
KINDS: tuple[Kind, ...] = ("tools", "prompts", "resources")
ANY: Literal["*"] = "*"

Mfa = Literal["off", "optional", "enforced"]
MFA_LEVELS: tuple[Mfa, ...] = ("off", "optional", "enforced")  # weakest first: the strictest is the largest index
AuditAccess = Literal["none", "read"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_PATTERN_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_MONTHLY_BUDGET = 1e9


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


def _list_or_all(value: Any) -> str | None:
    # Chooses the branch of a `[...] | "*"` field before validating, so a mistake gets one message from the branch
    # that was meant instead of one per branch ("not a valid tuple" and "should be '*'" for the same value).
    if value == ANY:
        return "all"
    if isinstance(value, list | tuple):
        return "list"
    return None


_LIST_OR_ALL = Discriminator(
    _list_or_all, custom_error_type="list_or_all", custom_error_message='must be a list, or "*" for all'
)

RoleName = Annotated[str, _plain_name("role name")]
ServerName = Annotated[str, AfterValidator(check_server_name)]
Classification = Annotated[str, _plain_name("classification")]
Pattern = Annotated[str, AfterValidator(_pattern)]
ServerList = Annotated[
    Annotated[tuple[ServerName, ...], Tag("list")] | Annotated[Literal["*"], Tag("all")], _LIST_OR_ALL
]
ClassificationList = Annotated[
    Annotated[tuple[Classification, ...], Tag("list")] | Annotated[Literal["*"], Tag("all")], _LIST_OR_ALL
]
PatternList = Annotated[Annotated[tuple[Pattern, ...], Tag("list")] | Annotated[Literal["*"], Tag("all")], _LIST_OR_ALL]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameRules(_Model):
    """Which names of one kind (tools, prompts or resources) a role may use on one server."""

    allow: tuple[Pattern, ...]  # required: an omitted allow must not silently mean "everything"
    deny: tuple[Pattern, ...] = ()


class Budget(_Model):
    """What one user of a role may spend through the LLM proxy."""

    # Strict: "100" or true are mistakes to report, not amounts to guess at.
    monthly_usd: StrictFloat = Field(ge=0, le=_MAX_MONTHLY_BUDGET, allow_inf_nan=False, description="US dollars")


class Role(_Model):
    mcp_servers: ServerList
    data_classification_access: ClassificationList = ()
    session_duration: StrictInt | None = Field(None, ge=1, le=7 * 24 * 60, description="minutes")
    administrative_functions: StrictBool = False
    tools: dict[ServerName, NameRules] = Field(default_factory=dict)
    prompts: dict[ServerName, NameRules] = Field(default_factory=dict)
    resources: dict[ServerName, NameRules] = Field(default_factory=dict)
    models: PatternList = Field((), description='model ids (globs) for the LLM proxy, or "*"; none when absent')
    budget: Budget | None = None
    mfa: Mfa = "optional"
    audit_access: AuditAccess | None = Field(None, description='unset: "read" for administrative roles, else "none"')

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

    @field_validator("mfa", mode="before")
    @classmethod
    def _mfa_is_a_word(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML, chamberlain.yaml) reads a bare `off` as false: say how to write it.
        if isinstance(value, bool):
            raise ValueError(
                "must be 'off', 'optional' or 'enforced' (in YAML write \"off\" in quotes: bare off is false)"
            )
        return value

    @field_validator("budget")
    @classmethod
    def _budget_needs_models(cls, budget: Budget | None, info: ValidationInfo) -> Budget | None:
        # A budget on a role that grants no model caps nothing (see the module docstring): most likely a mistake.
        if budget is not None and info.data.get("models", ANY) == ():  # absent: models itself was invalid
            raise ValueError("a budget applies to the role's models, and this role lists none")
        return budget

    def grants(self, server: str) -> bool:
        return self.mcp_servers == ANY or server in self.mcp_servers

    def rules(self, kind: Kind) -> dict[str, NameRules]:
        return {"tools": self.tools, "prompts": self.prompts, "resources": self.resources}[kind]

    @property
    def reads_audit(self) -> bool:
        if self.audit_access is None:
            return self.administrative_functions
        return self.audit_access == "read"


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


# -- reporting mistakes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One mistake in a role document, located as the document spells it."""

    path: tuple[str | int, ...]  # keys and list indexes from the top of the document
    message: str

    @property
    def dotted(self) -> str:
        return ".".join(map(str, self.path)) or "(document)"

    def __str__(self) -> str:
        return f"{self.dotted}: {self.message}"


# pydantic's words for what a JSON or YAML author calls otherwise (a tuple is a list, a model an object).
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping (an object)",
    "model_type": "must be a mapping (an object)",
    "model_attributes_type": "must be a mapping (an object)",
}


def validation_problems(error: ValidationError, data: Any) -> list[Problem]:
    """pydantic's errors for `data` as the document's own paths and plain messages, in the order reported."""
    problems = []
    for detail in error.errors():
        path = _written_path(detail["loc"], data)
        message = _MESSAGES.get(detail["type"]) or detail["msg"].removeprefix("Value error, ")
        problems.append(Problem(path, message))
    return problems


def _written_path(loc: tuple[int | str, ...], data: Any) -> tuple[str | int, ...]:
    """A location without the parts pydantic inserts that the document does not have: the tag of a union branch
    ("list" in `mcp_servers.list.0`) and the `[key]` marker of an invalid mapping key."""
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int):
            node = node[part] if -len(node) <= part < len(node) else None
        elif last and part != "[key]" and isinstance(node, Mapping):
            node = None  # a missing key: part of the path although the document lacks it
        else:
            continue
        path.append(part)
    return tuple(path)


class InvalidRoles(ValueError):
    """A role document that does not validate; `problems` lists every mistake with its path."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def parse_roles(data: Any) -> RolesDocument:
    """Validates a role document given as Python data (from JSON or YAML); raises InvalidRoles."""
    try:
        return RolesDocument.model_validate(data)
    except ValidationError as error:
        raise InvalidRoles(validation_problems(error, data)) from None
