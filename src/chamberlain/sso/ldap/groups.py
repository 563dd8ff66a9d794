"""The groups a directory entry belongs to, nested groups included.

OpenLDAP (and any RFC 4519 directory): groups list their members in `member` (groupOfNames) or `uniqueMember`
(groupOfUniqueNames), and a member may itself be a group. The walk goes up one level per query, every group of the
level at once, remembering the groups seen (membership may loop) and stopping at MAX_NESTING levels.

Active Directory: one query with LDAP_MATCHING_RULE_IN_CHAIN (1.2.840.113556.1.4.1941, [MS-ADTS] §3.1.1.3.4.4.3),
which the domain controller evaluates transitively over `member`. OpenLDAP does not implement that rule, so this path
is covered by unit tests of the filter only, never against a real AD here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped]

MAX_NESTING = 10  # levels of groups in groups followed; deeper ones are not reported
_PER_QUERY = 32  # members asked about in one filter, so that a wide level does not make one enormous filter
LDAP_MATCHING_RULE_IN_CHAIN = "1.2.840.113556.1.4.1941"


@dataclass(frozen=True)
class Group:
    dn: str
    cn: str | None


# Runs a subtree search under the group base with this filter and returns the groups it found.
GroupSearch = Callable[[str], Sequence[Group]]


def members_filter(member_dns: Iterable[str]) -> str:
    """Groups listing any of these DNs as a member (RFC 4519 §2.17 member, §2.40 uniqueMember); each DN is an
    assertion value escaped per RFC 4515 §3."""
    clauses = "".join(
        f"(member={value})(uniqueMember={value})" for value in (escape_filter_chars(dn) for dn in member_dns)
    )
    return f"(|{clauses})"


def in_chain_filter(member_dn: str) -> str:
    """Active Directory groups having `member_dn` as a member, directly or through other groups."""
    return f"(member:{LDAP_MATCHING_RULE_IN_CHAIN}:={escape_filter_chars(member_dn)})"


def nested_groups(search: GroupSearch, member_dn: str) -> list[Group]:
    """Every group `member_dn` is in, up to MAX_NESTING levels of groups in groups, each group once."""
    found: dict[str, Group] = {}
    level = [member_dn]
    for _ in range(MAX_NESTING):
        if not level:
            break
        containing = [group for chunk in _chunks(level, _PER_QUERY) for group in search(members_filter(chunk))]
        level = []
        for group in containing:
            key = group.dn.casefold()  # DNs compare case-insensitively in the attribute types used here
            if key not in found:
                found[key] = group
                level.append(group.dn)
    return list(found.values())


def active_directory_groups(search: GroupSearch, member_dn: str) -> list[Group]:
    return list({group.dn.casefold(): group for group in search(in_chain_filter(member_dn))}.values())


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
