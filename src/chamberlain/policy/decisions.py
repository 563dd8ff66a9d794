"""The compiled policy the gateway asks on every proxied request: may these roles reach this server, this tool?

Built once from the role document: every glob list becomes one regular expression. Decisions are cached per set
of roles and server, and per name inside that, so a repeated decision costs a few dictionary lookups.

A user with several roles gets the union: a name is permitted when at least one of the caller's roles that grants
the server permits it (within that role, deny wins over allow). Role names the document does not define grant
nothing, and roles that do not grant the server take no part in its decisions.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from chamberlain.policy.roles import KINDS, Kind, NameRules, Role, RolesDocument

# Bounds on what callers can make the caches hold: role sets come from signed tokens, names from request bodies.
_ACCESS_CACHE_SIZE = 4096
_NAME_CACHE_SIZE = 1024
_CACHED_NAME_LENGTH = 256  # longer names (a long resource URI) are decided each time rather than kept


@dataclass(frozen=True, slots=True)
class _Matcher:
    """One role's rules of one kind for one server."""

    allow: re.Pattern[str] | None  # None: nothing allowed
    deny: re.Pattern[str] | None  # None: nothing denied

    def permits(self, name: str) -> bool:
        if self.deny is not None and self.deny.match(name):
            return False
        return self.allow is not None and self.allow.match(name) is not None


def _compile_globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    # fnmatch.translate anchors each glob ((?s:…)\Z); without re.IGNORECASE this is fnmatch.fnmatchcase everywhere.
    return re.compile("|".join(fnmatch.translate(glob) for glob in globs)) if globs else None


class _Compiler:
    """Turns name rules into matchers, compiling each distinct glob list once."""

    def __init__(self) -> None:
        self._patterns: dict[tuple[str, ...], re.Pattern[str] | None] = {}

    def matcher(self, rules: NameRules) -> _Matcher:
        return _Matcher(self._pattern(rules.allow), self._pattern(rules.deny))

    def _pattern(self, globs: tuple[str, ...]) -> re.Pattern[str] | None:
        if globs not in self._patterns:
            self._patterns[globs] = _compile_globs(globs)
        return self._patterns[globs]


@dataclass(frozen=True, slots=True)
class _CompiledRole:
    role: Role
    matchers: dict[tuple[Kind, str], _Matcher]  # (kind, server) -> matcher; absent: everything of that kind


class ServerAccess:
    """What one set of roles may use on one server. Only built for role sets that reach the server."""

    def __init__(self, grants: list[_CompiledRole], server: str) -> None:
        # Per kind: None when some granting role has no rules of that kind here (it allows everything),
        # otherwise the matchers of every granting role, any of which may permit a name.
        self._matchers: dict[Kind, tuple[_Matcher, ...] | None] = {}
        for kind in KINDS:
            matchers = [grant.matchers.get((kind, server)) for grant in grants]
            self._matchers[kind] = None if None in matchers else tuple(m for m in matchers if m is not None)
        self._decided: dict[tuple[Kind, str], bool] = {}

    def permits(self, kind: Kind, name: str) -> bool:
        matchers = self._matchers[kind]
        if matchers is None:
            return True
        key = (kind, name)
        decided = self._decided.get(key)
        if decided is None:
            decided = any(matcher.permits(name) for matcher in matchers)
            if len(name) <= _CACHED_NAME_LENGTH:
                if len(self._decided) >= _NAME_CACHE_SIZE:
                    self._decided.clear()
                self._decided[key] = decided
        return decided


class Policy:
    def __init__(self, document: RolesDocument) -> None:
        compiler = _Compiler()
        self._roles = {
            name: _CompiledRole(
                role,
                {
                    (kind, server): compiler.matcher(rules)
                    for kind in KINDS
                    for server, rules in role.rules(kind).items()
                },
            )
            for name, role in document.enterprise_roles.items()
        }
        self._access: dict[tuple[frozenset[str], str], ServerAccess | None] = {}

    def access(self, roles: tuple[str, ...], server: str) -> ServerAccess | None:
        """What the roles may use on the server; None when none of them grants it (the gateway answers 403)."""
        key = (frozenset(roles), server)
        try:
            return self._access[key]
        except KeyError:
            pass
        grants = [
            compiled
            for compiled in (self._roles.get(name) for name in sorted(key[0]))
            if compiled is not None and compiled.role.grants(server)
        ]
        access = ServerAccess(grants, server) if grants else None
        if len(self._access) >= _ACCESS_CACHE_SIZE:
            self._access.clear()
        self._access[key] = access
        return access
