"""Policy decisions: deny wins within a role, empty allow denies, roles combine as a union, globs are fnmatchcase;
profiles: the shortest session, the strictest MFA, the union of models and the largest budget."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.demo.server import DEMO_SERVER_NAME
from chamberlain.policy import decisions
from chamberlain.policy.decisions import Policy, RoleProfile
from chamberlain.policy.roles import (
    ANY,
    DEFAULT_ROLES,
    KINDS,
    MFA_LEVELS,
    Budget,
    Kind,
    NameRules,
    Role,
    RolesDocument,
)
from tests.unit.test_roles import ISSUE_EXAMPLE

SERVERS = ("github", "postgres", "slack")
ROLE_NAMES = ("dev", "ops", "sec", "lead")
kinds = st.sampled_from(KINDS)
servers = st.sampled_from(SERVERS)
# A small alphabet, so that names and globs actually meet: most random globs would match nothing.
names = st.text("ab_.", max_size=5)
globs = st.text("ab_.*?[]!", min_size=1, max_size=5)
# Any text a rule may hold (control characters are refused by validation) and any name a request may carry.
any_globs = st.text(st.characters(exclude_categories=["Cc"]), min_size=1, max_size=12)
any_names = st.text(max_size=20)
glob_lists = st.lists(globs, max_size=3).map(tuple)  # an empty allow list included
rules = st.builds(NameRules, allow=glob_lists, deny=glob_lists)


@st.composite
def roles(draw: st.DrawFn) -> Role:
    listed = draw(st.just(ANY) | st.lists(servers, unique=True).map(tuple))
    reachable = SERVERS if listed == ANY else listed
    per_kind = {kind: draw(st.dictionaries(st.sampled_from(reachable), rules)) if reachable else {} for kind in KINDS}
    return Role(mcp_servers=listed, **per_kind)


documents = st.dictionaries(st.sampled_from(ROLE_NAMES), roles()).map(lambda r: RolesDocument(enterprise_roles=r))
# Callers may hold role names the document does not define ("ghost"): they must grant nothing.
held_roles = st.lists(st.sampled_from((*ROLE_NAMES, "ghost")), max_size=5).map(tuple)


def document(**roles: Role) -> RolesDocument:
    return RolesDocument(enterprise_roles=roles)


def decision(policy: Policy, held: tuple[str, ...], server: str, kind: Kind, name: str) -> bool | None:
    """None when the server is out of reach, else whether the name is permitted."""
    access = policy.access(held, server)
    return None if access is None else access.permits(kind, name)


def single_role_reference(role: Role, server: str, kind: Kind, name: str) -> bool:
    """The rule as the issue states it, with fnmatch itself: no rules allow all; deny wins; then allow."""
    rules = role.rules(kind).get(server)
    if rules is None:
        return True
    if any(fnmatchcase(name, glob) for glob in rules.deny):
        return False
    return any(fnmatchcase(name, glob) for glob in rules.allow)


@given(role=roles(), server=servers, kind=kinds, name=names)
def test_a_single_role_decides_as_the_rules_say(role: Role, server: str, kind: Kind, name: str) -> None:
    expected = single_role_reference(role, server, kind, name) if role.grants(server) else None
    assert decision(Policy(document(dev=role)), ("dev",), server, kind, name) == expected


@given(allow=st.lists(globs, max_size=3), deny=st.lists(globs, max_size=3), name=names, kind=kinds)
def test_deny_always_wins_within_a_role(allow: list[str], deny: list[str], name: str, kind: Kind) -> None:
    # The name is allowed outright (exactly and by "*") and also denied exactly: deny must win.
    rules = NameRules(allow=(name or "x", "*", *allow), deny=(name or "x", *deny))
    role = Role.model_validate({"mcp_servers": ["github"], kind: {"github": rules}})
    access = Policy(document(dev=role)).access(("dev",), "github")
    assert access is not None
    assert not access.permits(kind, name or "x")


@given(deny=st.lists(any_globs, max_size=3), name=any_names, kind=kinds)
def test_an_empty_allow_list_denies_everything(deny: list[str], name: str, kind: Kind) -> None:
    role = Role.model_validate({"mcp_servers": ["github"], kind: {"github": NameRules(allow=(), deny=tuple(deny))}})
    access = Policy(document(dev=role)).access(("dev",), "github")
    assert access is not None
    assert not access.permits(kind, name)


@given(roles_document=documents, held=held_roles, server=servers, kind=kinds, name=names)
def test_several_roles_decide_as_the_or_of_each_alone(
    roles_document: RolesDocument, held: tuple[str, ...], server: str, kind: Kind, name: str
) -> None:
    policy = Policy(roles_document)
    alone = [decision(policy, (role,), server, kind, name) for role in held]
    reachable = [permitted for permitted in alone if permitted is not None]
    expected = any(reachable) if reachable else None
    assert decision(policy, held, server, kind, name) == expected


@given(roles_document=documents, held=held_roles, server=servers, kind=kinds, name=names)
def test_a_role_that_does_not_grant_the_server_never_contributes(
    roles_document: RolesDocument, held: tuple[str, ...], server: str, kind: Kind, name: str
) -> None:
    # Even a role that lists everything else (and could allow everything) changes nothing on a server it lacks.
    outsider = Role(mcp_servers=tuple(s for s in SERVERS if s != server))
    with_outsider = RolesDocument(enterprise_roles={**roles_document.enterprise_roles, "outsider": outsider})
    assert decision(Policy(with_outsider), (*held, "outsider"), server, kind, name) == decision(
        Policy(roles_document), held, server, kind, name
    )


@given(first=documents, second=documents, held=held_roles, server=servers, kind=kinds, name=names)
def test_no_decision_depends_on_roles_the_caller_does_not_hold(
    first: RolesDocument, second: RolesDocument, held: tuple[str, ...], server: str, kind: Kind, name: str
) -> None:
    # Same definitions for the roles held, anything at all for the others (defined, redefined or missing).
    mixed = {name: role for name, role in second.enterprise_roles.items() if name not in held}
    mixed.update({name: role for name, role in first.enterprise_roles.items() if name in held})
    assert decision(Policy(first), held, server, kind, name) == decision(
        Policy(RolesDocument(enterprise_roles=mixed)), held, server, kind, name
    )


@given(glob=any_globs, name=any_names, kind=kinds)
def test_allow_globs_match_as_fnmatchcase(glob: str, name: str, kind: Kind) -> None:
    role = Role.model_validate({"mcp_servers": ["github"], kind: {"github": {"allow": [glob]}}})
    access = Policy(document(dev=role)).access(("dev",), "github")
    assert access is not None
    assert access.permits(kind, name) == fnmatchcase(name, glob)


@given(glob=any_globs, name=any_names, kind=kinds)
def test_deny_globs_match_as_fnmatchcase(glob: str, name: str, kind: Kind) -> None:
    role = Role.model_validate({"mcp_servers": ["github"], kind: {"github": {"allow": ["*"], "deny": [glob]}}})
    access = Policy(document(dev=role)).access(("dev",), "github")
    assert access is not None
    assert access.permits(kind, name) == (not fnmatchcase(name, glob))


def developer_and_admin() -> Policy:
    developer = Role.model_validate(
        {
            "mcp_servers": ["github", "postgres"],
            "tools": {"github": {"allow": ["*"], "deny": ["delete_*"]}},
            "resources": {"postgres": {"allow": ["postgres://reports/*"]}},
        }
    )
    return Policy(document(developer=developer, admin=Role(mcp_servers=ANY)))


def test_developer_is_refused_a_denied_tool_that_admin_may_call() -> None:
    policy = developer_and_admin()
    developer = policy.access(("developer",), "github")
    admin = policy.access(("admin",), "github")
    assert developer is not None
    assert admin is not None
    assert developer.permits("tools", "create_issue")
    assert not developer.permits("tools", "delete_repository")
    assert admin.permits("tools", "delete_repository")


def test_matching_is_case_sensitive() -> None:
    developer = developer_and_admin().access(("developer",), "github")
    assert developer is not None
    assert not developer.permits("tools", "delete_repo")
    assert developer.permits("tools", "Delete_repo")  # not the denied name: tool names are case-sensitive in MCP


def test_rules_of_one_kind_leave_the_other_kinds_open() -> None:
    developer = developer_and_admin().access(("developer",), "github")
    assert developer is not None
    assert developer.permits("prompts", "delete_everything")
    assert developer.permits("resources", "repo://any")


def test_a_name_is_decided_per_kind() -> None:
    role = Role.model_validate(
        {"mcp_servers": ["github"], "tools": {"github": {"allow": ["report"]}}, "prompts": {"github": {"allow": []}}}
    )
    access = Policy(document(dev=role)).access(("dev",), "github")
    assert access is not None
    for _ in range(2):  # the second round answers from the cache
        assert access.permits("tools", "report")
        assert not access.permits("prompts", "report")


def test_each_role_adds_what_it_permits() -> None:
    reader = Role.model_validate({"mcp_servers": ["github"], "tools": {"github": {"allow": ["get_*", "list_*"]}}})
    triager = Role.model_validate(
        {"mcp_servers": ["github", "slack"], "tools": {"github": {"allow": ["*_issue", "list_*"], "deny": ["get_*"]}}}
    )
    access = Policy(document(reader=reader, triager=triager)).access(("reader", "triager"), "github")
    assert access is not None
    assert access.permits("tools", "get_file")  # the reader's allow; the triager's deny binds only the triager
    assert access.permits("tools", "close_issue")  # the triager's allow
    assert access.permits("tools", "list_repos")
    assert not access.permits("tools", "delete_repo")  # neither role allows it


def test_resources_match_on_their_uri() -> None:
    postgres = developer_and_admin().access(("developer",), "postgres")
    assert postgres is not None
    assert postgres.permits("resources", "postgres://reports/q1")
    assert not postgres.permits("resources", "postgres://payroll/q1")
    assert postgres.permits("tools", "query")


def test_servers_outside_every_role_are_out_of_reach() -> None:
    policy = developer_and_admin()
    assert policy.access(("developer",), "slack") is None
    assert policy.access((), "github") is None
    assert policy.access(("ghost",), "github") is None  # a role the document does not define grants nothing
    assert policy.access(("admin",), "slack") is not None


def test_the_order_and_repetition_of_roles_do_not_matter() -> None:
    policy = developer_and_admin()
    assert policy.access(("developer", "admin"), "github") is policy.access(("admin", "developer", "admin"), "github")


def test_decisions_stay_right_past_the_cache_bounds() -> None:
    role = Role.model_validate({"mcp_servers": ["github"], "tools": {"github": {"allow": ["read_*", "x*"]}}})
    policy = Policy(document(dev=role))
    for index in range(5000):  # more role sets than the access cache holds
        assert policy.access(("dev", f"unknown{index}"), "github") is not None
    access = policy.access(("dev",), "github")
    assert access is not None
    # More names than the name cache holds, and names too long to be cached, each asked twice.
    tool_names = [f"read_{i}" if i % 2 else f"write_{i}" for i in range(3000)] + ["read_" + "a" * 1000, "y" * 1000]
    expected = [name.startswith(("read_", "x")) for name in tool_names]
    for _ in range(2):
        assert [access.permits("tools", name) for name in tool_names] == expected


def test_default_roles() -> None:
    policy = Policy(DEFAULT_ROLES)
    assert policy.access(("developer",), DEMO_SERVER_NAME) is not None
    assert policy.access(("developer",), "github") is None
    admin = policy.access(("admin",), "github")
    assert admin is not None
    assert admin.permits("tools", "anything")


# -- role sets past the caches' bounds ------------------------------------------------------------------------------


def test_combined_grants_stay_right_and_bounded_past_their_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions, "_COMBINED_CACHE_SIZE", 8)
    monkeypatch.setattr(decisions, "_NAME_CACHE_SIZE", 16)
    # Forty roles, each allowing its own tool on github: a caller may use exactly the tools of the roles held.
    roles = {
        f"r{i}": Role.model_validate({"mcp_servers": ["github"], "tools": {"github": {"allow": [f"t{i}"]}}})
        for i in range(40)
    }
    policy = Policy(RolesDocument(enterprise_roles=roles))
    for _ in range(2):
        for i in range(39):
            held = (f"r{i}", f"r{i + 1}")
            access = policy.access(held, "github")
            assert access is not None
            assert [access.permits("tools", f"t{j}") for j in range(40)] == [j in (i, i + 1) for j in range(40)]
            sizes = policy.cache_sizes()
            assert sizes["combined"] <= 8
            assert sizes["names"] <= 16


def test_a_role_allowing_everything_on_a_server_makes_the_union_everything() -> None:
    narrow = Role.model_validate({"mcp_servers": ["github"], "tools": {"github": {"allow": []}}})
    policy = Policy(document(narrow=narrow, wide=Role(mcp_servers=("github",))))
    access = policy.access(("narrow", "wide"), "github")
    assert access is not None
    assert access.permits("tools", "delete_repo")
    assert policy.cache_sizes()["combined"] == 0  # nothing to combine: no cache entry spent on it


# -- profiles: what a set of roles grants beyond servers --------------------------------------------------------------


def role(**fields: Any) -> Role:
    return Role.model_validate({"mcp_servers": [], **fields})


def profile_of(held: tuple[str, ...], **roles: Role) -> RoleProfile:
    return Policy(RolesDocument(enterprise_roles=roles)).profile(held)


def test_the_issue_example_profiles() -> None:
    policy = Policy(RolesDocument.model_validate_json(ISSUE_EXAMPLE))
    developer = policy.profile(("developer",))
    assert developer.session_minutes == 240
    assert developer.classifications == frozenset({"public", "internal"})
    assert not developer.administrative
    assert not developer.audit_read
    assert developer.mfa == "optional"
    assert not developer.permits_model("claude-sonnet-4-5")  # no `models`: no model access
    senior = policy.profile(("senior_developer",))
    assert senior.session_minutes == 480
    assert senior.permits_classification("confidential")
    both = policy.profile(("senior_developer", "developer"))
    assert both.session_minutes == 240  # the issue's rule: the shortest
    assert both.classifications == frozenset({"public", "internal", "confidential"})
    admin = policy.profile(("admin",))
    assert admin.administrative
    assert admin.audit_read  # unset audit_access: administrators read the audit log
    assert admin.classifications == ANY
    assert admin.permits_classification("anything")
    assert not admin.permits_model("claude-opus-4")  # administration is not an entitlement to spend


def test_session_is_the_shortest_of_the_roles_that_set_one() -> None:
    roles = {"long": role(session_duration=480), "short": role(session_duration=30), "unset": role()}
    assert profile_of(("long", "short", "unset"), **roles).session_minutes == 30
    assert profile_of(("long", "unset"), **roles).session_minutes == 480
    assert profile_of(("unset",), **roles).session_minutes is None  # the tenant's setting decides


@pytest.mark.parametrize(
    ("levels", "strictest"),
    [
        (("off",), "off"),
        (("off", "optional"), "optional"),
        (("optional", "enforced", "off"), "enforced"),
        ((), "off"),  # no role asks for anything: the weakest, so that adding a role never weakens it
    ],
)
def test_mfa_is_the_strictest(levels: tuple[str, ...], strictest: str) -> None:
    roles = {f"r{index}": role(mfa=level) for index, level in enumerate(levels)}
    assert profile_of(tuple(roles), **roles).mfa == strictest


def test_mfa_defaults_to_optional_and_an_unset_role_does_not_weaken_an_enforcing_one() -> None:
    roles = {"plain": role(), "strict": role(mfa="enforced")}
    assert profile_of(("plain",), **roles).mfa == "optional"
    assert profile_of(("plain", "strict"), **roles).mfa == "enforced"


def test_audit_access_defaults_to_administration_and_can_be_set_either_way() -> None:
    roles = {
        "admin": role(administrative_functions=True),
        "separated_admin": role(administrative_functions=True, audit_access="none"),
        "auditor": role(audit_access="read"),
        "developer": role(),
    }
    assert profile_of(("admin",), **roles).audit_read
    assert not profile_of(("separated_admin",), **roles).audit_read
    assert profile_of(("separated_admin",), **roles).administrative
    auditor = profile_of(("auditor",), **roles)
    assert auditor.audit_read
    assert not auditor.administrative  # read-only: the auditor manages nothing
    assert not profile_of(("developer",), **roles).audit_read
    assert profile_of(("developer", "auditor"), **roles).audit_read


@pytest.mark.parametrize(
    ("models", "allowed", "refused"),
    [
        (["claude-sonnet-*"], ["claude-sonnet-4-5", "claude-sonnet-"], ["claude-opus-4", "Claude-sonnet-4", "x"]),
        (["claude-haiku-4-5"], ["claude-haiku-4-5"], ["claude-haiku-4-5-20251001", "claude-haiku-4"]),
        ("*", ["claude-opus-4", "anything"], []),
        ([], [], ["claude-sonnet-4-5", ""]),
        (["claude-*@2025*"], ["claude-sonnet-4@20250514"], ["claude-sonnet-4"]),
    ],
)
def test_models_match_as_case_sensitive_globs(models: Any, allowed: list[str], refused: list[str]) -> None:
    profile = profile_of(("r",), r=role(models=models))
    assert [profile.permits_model(model) for model in allowed] == [True] * len(allowed)
    assert [profile.permits_model(model) for model in refused] == [False] * len(refused)


def test_models_are_the_union_of_the_roles() -> None:
    roles = {"fast": role(models=["claude-haiku-*"]), "smart": role(models=["claude-opus-*"]), "none": role()}
    union = profile_of(("fast", "smart", "none"), **roles)
    assert union.models == ("claude-haiku-*", "claude-opus-*")
    assert union.permits_model("claude-haiku-4-5")
    assert union.permits_model("claude-opus-4-1")
    assert not union.permits_model("claude-sonnet-4-5")
    assert profile_of(("fast", "all"), fast=roles["fast"], all=role(models="*")).models == ANY


def test_budget_is_the_largest_among_the_roles_granting_models() -> None:
    roles = {
        "small": role(models=["claude-haiku-*"], budget={"monthly_usd": 50}),
        "large": role(models=["claude-sonnet-*"], budget={"monthly_usd": 400.5}),
        "uncapped": role(models=["claude-opus-*"]),
        "no_models": role(),
    }
    assert profile_of(("small", "large"), **roles).monthly_budget_usd == 400.5
    assert profile_of(("small", "no_models"), **roles).monthly_budget_usd == 50  # a role without models is no cap
    assert profile_of(("small", "uncapped"), **roles).monthly_budget_usd is None  # one uncapped entitlement
    assert profile_of(("no_models",), **roles).monthly_budget_usd is None


def test_unknown_roles_grant_nothing_in_a_profile() -> None:
    profile = Policy(RolesDocument.model_validate_json(ISSUE_EXAMPLE)).profile(("ghost", "root"))
    assert profile == RoleProfile(
        roles=frozenset(),
        session_minutes=None,
        administrative=False,
        audit_read=False,
        mfa="off",
        classifications=frozenset(),
        models=(),
        monthly_budget_usd=None,
    )
    assert not profile.permits_model("claude-sonnet-4-5")
    assert not profile.permits_classification("public")
    known = Policy(RolesDocument.model_validate_json(ISSUE_EXAMPLE)).profile(("ghost", "developer"))
    assert known.roles == frozenset({"developer"})


def test_profiles_are_cached_per_role_set_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy(RolesDocument.model_validate_json(ISSUE_EXAMPLE))
    assert policy.profile(("developer", "admin")) is policy.profile(("admin", "developer", "admin"))
    monkeypatch.setattr(decisions, "_PROFILE_CACHE_SIZE", 4)
    for index in range(20):
        assert policy.profile(("developer", f"ghost{index}")).session_minutes == 240
        assert policy.cache_sizes()["profiles"] <= 4
    assert policy.profile(("senior_developer",)).session_minutes == 480


# -- properties of the union ------------------------------------------------------------------------------------------

model_names = st.sampled_from(("claude-haiku-4", "claude-sonnet-4", "claude-opus-4", "gpt"))
model_globs = st.sampled_from(("claude-*", "claude-haiku-*", "*-4", "gpt", "claude-opus-4"))


@st.composite
def full_roles(draw: st.DrawFn) -> Role:
    """Roles with every field: servers and rules as above, and the profile's extensions."""
    base = draw(roles())
    models = draw(st.just(ANY) | st.lists(model_globs, max_size=3).map(tuple))
    return base.model_copy(
        update={
            "data_classification_access": draw(
                st.just(ANY) | st.lists(st.sampled_from(("public", "internal", "secret")), unique=True).map(tuple)
            ),
            "session_duration": draw(st.none() | st.integers(1, 7 * 24 * 60)),
            "administrative_functions": draw(st.booleans()),
            "models": models,
            "budget": draw(st.none() | st.builds(Budget, monthly_usd=st.floats(0, 1e6))) if models else None,
            "mfa": draw(st.sampled_from(MFA_LEVELS)),
            "audit_access": draw(st.sampled_from((None, "none", "read"))),
        }
    )


full_documents = st.dictionaries(st.sampled_from(ROLE_NAMES), full_roles()).map(
    lambda r: RolesDocument(enterprise_roles=r)
)


@given(roles_document=full_documents, held=held_roles, extra=st.sampled_from((*ROLE_NAMES, "ghost")))
def test_adding_a_role_never_takes_a_permission_away(
    roles_document: RolesDocument, held: tuple[str, ...], extra: str
) -> None:
    policy = Policy(roles_document)
    before, after = policy.profile(held), policy.profile((*held, extra))
    for server in SERVERS:
        had = policy.access(held, server)
        has = policy.access((*held, extra), server)
        if had is None:
            continue
        assert has is not None
        for kind in KINDS:
            for name in ("", "a", "b_a", "ab", "._"):
                assert has.permits(kind, name) or not had.permits(kind, name)
    assert after.administrative or not before.administrative
    assert after.audit_read or not before.audit_read
    assert before.classifications == ANY or all(after.permits_classification(c) for c in before.classifications)
    for model in ("claude-haiku-4", "claude-sonnet-4", "claude-opus-4", "gpt"):
        assert after.permits_model(model) or not before.permits_model(model)
    # Limits only tighten: sessions get no longer and MFA no weaker.
    if before.session_minutes is not None:
        assert after.session_minutes is not None
        assert after.session_minutes <= before.session_minutes
    assert MFA_LEVELS.index(after.mfa) >= MFA_LEVELS.index(before.mfa)


@given(roles_document=full_documents, held=held_roles, server=servers)
def test_a_role_set_reaches_a_server_when_any_of_its_roles_does(
    roles_document: RolesDocument, held: tuple[str, ...], server: str
) -> None:
    policy = Policy(roles_document)
    alone = [policy.access((name,), server) is not None for name in held]
    assert (policy.access(held, server) is not None) == any(alone)


@given(roles_document=full_documents, held=held_roles, model=model_names)
def test_a_profile_is_the_merge_of_the_single_roles(
    roles_document: RolesDocument, held: tuple[str, ...], model: str
) -> None:
    policy = Policy(roles_document)
    merged = policy.profile(held)
    singles = [policy.profile((name,)) for name in held if name in roles_document.enterprise_roles]
    durations = [single.session_minutes for single in singles if single.session_minutes is not None]
    assert merged.session_minutes == (min(durations) if durations else None)
    assert merged.administrative == any(single.administrative for single in singles)
    assert merged.audit_read == any(single.audit_read for single in singles)
    assert merged.permits_model(model) == any(single.permits_model(model) for single in singles)
    assert merged.mfa == max((single.mfa for single in singles), key=MFA_LEVELS.index, default="off")
    with_models = [single for single in singles if single.models]
    budgets = [single.monthly_budget_usd for single in with_models]
    expected = None if not budgets or None in budgets else max(b for b in budgets if b is not None)
    assert merged.monthly_budget_usd == expected
    # The order and repetition of roles change nothing, and the answer comes from the cache the second time.
    assert policy.profile(tuple(reversed(held)) + held) is merged


@given(roles_document=full_documents)
def test_a_document_stored_as_json_comes_back_the_same(roles_document: RolesDocument) -> None:
    # What `chamberlain roles import` and the admin API store (tenants.config), read back as the refresher reads it.
    stored = json.loads(json.dumps(roles_document.model_dump(mode="json", exclude_unset=True)))
    assert RolesDocument.model_validate(stored) == roles_document
