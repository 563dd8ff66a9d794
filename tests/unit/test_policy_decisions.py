"""Policy decisions: deny wins within a role, empty allow denies, roles combine as a union, globs are fnmatchcase."""

from __future__ import annotations

from fnmatch import fnmatchcase

from hypothesis import given
from hypothesis import strategies as st

from chamberlain.demo.server import DEMO_SERVER_NAME
from chamberlain.policy.decisions import Policy
from chamberlain.policy.roles import ANY, DEFAULT_ROLES, KINDS, Kind, NameRules, Role, RolesDocument

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
