"""A user's team, from the roles their token carries: no lookup on the request path.

A tenant's `llm.teams` maps each team to roles, `{team: [role, …]}`; a user belongs to the first team, in the order
the configuration lists them, that shares a role with the user's roles. Someone in two teams is counted once, in the
first: spend reports and team budgets must add up.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


def team_of(roles: Collection[str], teams: Mapping[str, Collection[str]]) -> str | None:
    for team, team_roles in teams.items():
        if any(role in roles for role in team_roles):
            return team
    return None
