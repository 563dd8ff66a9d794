"""The compiled policy the gateway asks on every proxied request: may these roles reach this server, this tool?

Built once from the role document. Each role is compiled per server it names: every glob list becomes one regular
expression, and a (role, server) pair without rules of any kind becomes one shared "everything" grant. A request
then costs a dictionary lookup per role it holds (at most a handful), never work per role set: with thousands of
users holding different combinations of a thousand roles (bench/policy_bench.py), a cache keyed by role set would
miss on most requests, and building an answer on a miss is what a request would cost anyway. What is cached:
- the combination of several granting roles' rules for one server (a `ServerAccess` per distinct set of grants,
  which role sets share: most sets have one granting role, or one that allows everything, and need no entry);
- the decision of one compiled rule for one name, in one table per policy (tool names repeat, URIs less so);
- the profile of a role set (`Policy.profile`: session lifetime, MFA, models, budget), least recently used first out.
Each is bounded by a number of entries, so memory stays bounded whatever role sets tokens carry or names requests
carry (role sets come from signed tokens, names from request bodies).

A user with several roles gets the union: a name is permitted when at least one of the caller's roles that grants
the server permits it (within that role, deny wins over allow). Role names the document does not define grant
nothing, and roles that do not grant the server take no part in its decisions. The profile's merge rules are in
roles.py's module docstring.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from chamberlain.policy.roles import ANY, KINDS, MFA_LEVELS, Kind, Mfa, NameRules, Role, RolesDocument

# Bounds on what callers can make the caches hold (entries; a few hundred bytes each at most).
_COMBINED_CACHE_SIZE = 4096
_NAME_CACHE_SIZE = 65_536
_CACHED_NAME_LENGTH = 256  # longer names (a long resource URI) are decided each time rather than kept
_PROFILE_CACHE_SIZE = 16_384

# What no role at all asks for: the weakest level, so that adding a role can only keep or raise it (a user with no
# defined role may do nothing anyway, and a factor already enrolled is asked for whatever the level).
_NO_ROLE_MFA: Mfa = MFA_LEVELS[0]


def _compile_globs(globs: Iterable[str]) -> re.Pattern[str] | None:
    # fnmatch.translate anchors each glob ((?s:…)\Z); without re.IGNORECASE this is fnmatch.fnmatchcase everywhere.
    joined = "|".join(fnmatch.translate(glob) for glob in globs)
    return re.compile(joined) if joined else None


class _Matcher:
    """One role's rules of one kind for one server. Compared by identity: it keys the policy's name cache."""

    __slots__ = ("_allow", "_decided", "_deny")

    def __init__(
        self, allow: re.Pattern[str] | None, deny: re.Pattern[str] | None, decided: dict[tuple[_Matcher, str], bool]
    ) -> None:
        self._allow = allow  # None: nothing allowed
        self._deny = deny  # None: nothing denied
        self._decided = decided  # shared by every matcher of the policy, so one bound covers them all

    def permits(self, name: str) -> bool:
        key = (self, name)
        decided = self._decided.get(key)
        if decided is None:
            decided = (self._deny is None or self._deny.match(name) is None) and (
                self._allow is not None and self._allow.match(name) is not None
            )
            if len(name) <= _CACHED_NAME_LENGTH:
                if len(self._decided) >= _NAME_CACHE_SIZE:
                    self._decided.clear()  # cheaper than LRU bookkeeping on every hit, and refilled at µs per name
                self._decided[key] = decided
        return decided


class ServerAccess:
    """What one set of roles may use on one server. Only built for role sets that reach the server."""

    __slots__ = ("_matchers",)

    def __init__(self, grants: Iterable[_Grant]) -> None:
        # Per kind: None when some granting role has no rules of that kind here (it allows everything),
        # otherwise the matchers of every granting role, any of which may permit a name.
        self._matchers: dict[Kind, tuple[_Matcher, ...] | None] = {}
        for kind in KINDS:
            matchers = [grant.matchers[kind] for grant in grants]
            self._matchers[kind] = None if None in matchers else tuple(m for m in matchers if m is not None)

    def permits(self, kind: Kind, name: str) -> bool:
        matchers = self._matchers[kind]
        if matchers is None:
            return True
        return any(matcher.permits(name) for matcher in matchers)


class _Grant:
    """One role's rules on one server it reaches; `access` answers for a caller whom only this role grants it."""

    __slots__ = ("access", "matchers")

    def __init__(self, matchers: dict[Kind, _Matcher | None]) -> None:
        self.matchers = matchers  # None for a kind: everything of that kind
        self.access = ServerAccess((self,))


@dataclass(frozen=True, slots=True)
class _CompiledRole:
    role: Role
    servers: dict[str, _Grant]  # the servers it names (in mcp_servers or in rules)
    elsewhere: _Grant | None  # every other server: the open grant for a "*" role, None for a list


@dataclass(frozen=True, slots=True)
class RoleProfile:
    """What a set of roles grants beyond servers and tools: see roles.py for how several roles combine."""

    roles: frozenset[str]  # the roles held that the document defines: the others grant nothing
    session_minutes: int | None  # the shortest session_duration; None: the tenant's setting decides
    administrative: bool
    audit_read: bool
    mfa: Mfa  # the strictest
    classifications: frozenset[str] | Literal["*"]
    models: tuple[str, ...] | Literal["*"]  # globs, sorted
    monthly_budget_usd: float | None  # None: no cap from the roles (or no models to spend on)
    _model_pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def permits_model(self, model: str) -> bool:
        if self.models == ANY:
            return True
        return self._model_pattern is not None and self._model_pattern.match(model) is not None

    def permits_classification(self, classification: str) -> bool:
        return self.classifications == ANY or classification in self.classifications


def build_profile(roles: dict[str, Role]) -> RoleProfile:
    """The merge of several roles (by name), as roles.py's module docstring states it."""
    chosen = roles.values()
    durations = [role.session_duration for role in chosen if role.session_duration is not None]
    classifications: frozenset[str] | Literal["*"] = (
        ANY
        if any(role.data_classification_access == ANY for role in chosen)
        else frozenset(label for role in chosen for label in role.data_classification_access)
    )
    with_models = [role for role in chosen if role.models]
    models: tuple[str, ...] | Literal["*"] = (
        ANY
        if any(role.models == ANY for role in with_models)
        else tuple(sorted({glob for role in with_models for glob in role.models}))
    )
    budgets = [role.budget.monthly_usd if role.budget is not None else None for role in with_models]
    return RoleProfile(
        roles=frozenset(roles),
        session_minutes=min(durations) if durations else None,
        administrative=any(role.administrative_functions for role in chosen),
        audit_read=any(role.reads_audit for role in chosen),
        mfa=max((role.mfa for role in chosen), key=MFA_LEVELS.index, default=_NO_ROLE_MFA),
        classifications=classifications,
        models=models,
        # A role that grants models without a cap leaves its users uncapped; otherwise the largest cap applies.
        monthly_budget_usd=None if None in budgets or not budgets else max(b for b in budgets if b is not None),
        _model_pattern=None if models == ANY else _compile_globs(models),
    )


class Policy:
    def __init__(self, document: RolesDocument) -> None:
        self.document = document
        self._decided: dict[tuple[_Matcher, str], bool] = {}
        patterns: dict[tuple[str, ...], re.Pattern[str] | None] = {}  # each distinct glob list compiled once
        everything: dict[Kind, _Matcher | None] = dict.fromkeys(KINDS)
        self._open = _Grant(everything)  # a role without rules on a server: everything there, for any role

        def pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
            if globs not in patterns:
                patterns[globs] = _compile_globs(globs)
            return patterns[globs]

        def grant(role: Role, server: str) -> _Grant:
            rules: dict[Kind, NameRules | None] = {kind: role.rules(kind).get(server) for kind in KINDS}
            if all(rule is None for rule in rules.values()):
                return self._open
            return _Grant(
                {
                    kind: None if rule is None else _Matcher(pattern(rule.allow), pattern(rule.deny), self._decided)
                    for kind, rule in rules.items()
                }
            )

        self._roles: dict[str, _CompiledRole] = {}
        for name, role in document.enterprise_roles.items():
            named = {server for kind in KINDS for server in role.rules(kind)}
            if role.mcp_servers != ANY:
                named.update(role.mcp_servers)
            self._roles[name] = _CompiledRole(
                role,
                {server: grant(role, server) for server in sorted(named)},
                self._open if role.mcp_servers == ANY else None,
            )
        self._combined: dict[frozenset[_Grant], ServerAccess] = {}
        self._profiles: OrderedDict[frozenset[str], RoleProfile] = OrderedDict()

    def access(self, roles: tuple[str, ...], server: str) -> ServerAccess | None:
        """What the roles may use on the server; None when none of them grants it (the gateway answers 403)."""
        first: _Grant | None = None
        several: set[_Grant] | None = None
        for name in roles:
            compiled = self._roles.get(name)
            if compiled is None:
                continue
            grant = compiled.servers.get(server, compiled.elsewhere)
            if grant is None:
                continue
            if grant is self._open:
                return grant.access  # one role allows everything there: so does the union
            if first is None:
                first = grant
            elif grant is not first:
                if several is None:
                    several = {first}
                several.add(grant)
        if first is None:
            return None
        if several is None:
            return first.access
        key = frozenset(several)
        combined = self._combined.get(key)
        if combined is None:
            combined = ServerAccess(key)
            if len(self._combined) >= _COMBINED_CACHE_SIZE:
                self._combined.clear()
            self._combined[key] = combined
        return combined

    def profile(self, roles: tuple[str, ...]) -> RoleProfile:
        """Session lifetime, MFA, administration, audit reading, classifications, models and budget of the roles."""
        key = frozenset(roles)
        profile = self._profiles.get(key)
        if profile is not None:
            self._profiles.move_to_end(key)
            return profile
        profile = build_profile({name: self._roles[name].role for name in sorted(key) if name in self._roles})
        self._profiles[key] = profile
        if len(self._profiles) > _PROFILE_CACHE_SIZE:
            self._profiles.popitem(last=False)
        return profile

    def cache_sizes(self) -> dict[str, int]:
        """Entries each cache holds now (for benchmarks and diagnostics): all of them are bounded."""
        return {"combined": len(self._combined), "names": len(self._decided), "profiles": len(self._profiles)}
