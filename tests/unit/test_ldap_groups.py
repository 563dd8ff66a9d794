"""Group queries: assertion values escaped, nested groups walked level by level to a bounded depth, and Active
Directory's query built as Microsoft documents it. No AD runs here: OpenLDAP does not implement
LDAP_MATCHING_RULE_IN_CHAIN, so the AD path is checked by the filter it sends; the OpenLDAP walk also runs against a
real slapd in tests/integration/test_ldap_directory.py."""

from __future__ import annotations

from chamberlain.sso.ldap.groups import (
    MAX_NESTING,
    Group,
    active_directory_groups,
    in_chain_filter,
    members_filter,
    nested_groups,
)


def test_member_filters_escape_the_dns_they_assert() -> None:
    # RFC 4515 §3: "(", ")", "*" and "\" in an assertion value are written \28, \29, \2a and \5c.
    tricky = r"CN=Smith\, J (contractor)*,OU=People,DC=corp,DC=example"
    assert members_filter([tricky, "cn=b"]) == (
        r"(|(member=CN=Smith\5c, J \28contractor\29\2a,OU=People,DC=corp,DC=example)"
        r"(uniqueMember=CN=Smith\5c, J \28contractor\29\2a,OU=People,DC=corp,DC=example)"
        "(member=cn=b)(uniqueMember=cn=b))"
    )


def test_active_directory_groups_come_from_one_matching_rule_in_chain_query() -> None:
    # [MS-ADTS] §3.1.1.3.4.4.3: LDAP_MATCHING_RULE_IN_CHAIN walks `member` transitively on the domain controller.
    asked: list[str] = []

    def search(query: str) -> list[Group]:
        asked.append(query)
        return [
            Group("CN=Staff,OU=Groups,DC=corp,DC=example", "Staff"),
            Group("cn=staff,ou=groups,dc=corp,dc=example", "Staff"),
        ]

    found = active_directory_groups(search, r"CN=Smith\, J (contractor),OU=People,DC=corp,DC=example")
    assert asked == [r"(member:1.2.840.113556.1.4.1941:=CN=Smith\5c, J \28contractor\29,OU=People,DC=corp,DC=example)"]
    assert [group.cn for group in found] == ["Staff"]  # the same group, however its DN was cased, once
    assert in_chain_filter("cn=*") == r"(member:1.2.840.113556.1.4.1941:=cn=\2a)"


def test_the_nested_walk_asks_one_query_per_level_and_stops_at_its_depth() -> None:
    # A chain of groups deeper than the walk goes: g1 holds the user, g2 holds g1, ...
    parents = {"user": "g1", **{f"g{level}": f"g{level + 1}" for level in range(1, MAX_NESTING + 5)}}
    asked: list[str] = []

    def search(query: str) -> list[Group]:
        asked.append(query)
        return [Group(parent, parent) for child, parent in parents.items() if f"(member={child})" in query]

    found = nested_groups(search, "user")
    assert [group.dn for group in found] == [f"g{level}" for level in range(1, MAX_NESTING + 1)]
    assert len(asked) == MAX_NESTING
