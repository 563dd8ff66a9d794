"""Group to role mappings: an IdP or directory group (a claim value, a SAML attribute value, an LDAP DN) and the
roles its members receive. One row per (group, role); a group with no row maps to nothing."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select

from chamberlain.store.database import Database
from chamberlain.store.schema import group_mappings


@dataclass(frozen=True)
class GroupMapping:
    group: str
    roles: tuple[str, ...]  # sorted
    created_at: float  # when the group's first mapping still present was made


class GroupMappingRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def list(self) -> list[GroupMapping]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(group_mappings.c.group_name, group_mappings.c.role, group_mappings.c.created_at)
                .where(group_mappings.c.tenant_id == self._tenant_id)
                .order_by(group_mappings.c.group_name, group_mappings.c.role)
            )
            return _grouped((row.group_name, row.role, row.created_at) for row in rows)

    async def get(self, group: str) -> GroupMapping | None:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(group_mappings.c.group_name, group_mappings.c.role, group_mappings.c.created_at)
                .where(group_mappings.c.tenant_id == self._tenant_id, group_mappings.c.group_name == group)
                .order_by(group_mappings.c.role)
            )
            found = _grouped((row.group_name, row.role, row.created_at) for row in rows)
        return found[0] if found else None

    async def set_roles(self, group: str, roles: Collection[str]) -> GroupMapping | None:
        """Replaces the group's roles in one transaction (rows for roles it keeps keep their creation time).
        An empty collection removes the group; returns the mapping as now stored."""
        wanted = set(roles)
        now = time.time()
        async with self._database.begin() as connection:
            present = set(
                (
                    await connection.scalars(
                        select(group_mappings.c.role).where(
                            group_mappings.c.tenant_id == self._tenant_id, group_mappings.c.group_name == group
                        )
                    )
                ).all()
            )
            if present - wanted:
                await connection.execute(
                    delete(group_mappings).where(
                        group_mappings.c.tenant_id == self._tenant_id,
                        group_mappings.c.group_name == group,
                        group_mappings.c.role.in_(sorted(present - wanted)),
                    )
                )
            added = sorted(wanted - present)
            if added:
                await connection.execute(
                    group_mappings.insert(),
                    [
                        {"tenant_id": self._tenant_id, "group_name": group, "role": role, "created_at": now}
                        for role in added
                    ],
                )
        return await self.get(group)

    async def remove(self, group: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(group_mappings).where(
                    group_mappings.c.tenant_id == self._tenant_id, group_mappings.c.group_name == group
                )
            )
            return bool(result.rowcount)

    async def roles_for(self, groups: Collection[str]) -> tuple[str, ...]:
        """The roles a member of these groups receives (sorted, without repeats): what a federated sign-in grants."""
        if not groups:
            return ()
        async with self._database.connect() as connection:
            roles = await connection.scalars(
                select(group_mappings.c.role)
                .distinct()
                .where(group_mappings.c.tenant_id == self._tenant_id, group_mappings.c.group_name.in_(list(groups)))
            )
            return tuple(sorted(roles.all()))


def _grouped(rows: Iterable[tuple[str, str, float]]) -> list[GroupMapping]:
    by_group: dict[str, tuple[list[str], float]] = {}
    for group, role, created_at in rows:
        roles, first = by_group.setdefault(group, ([], created_at))
        roles.append(role)
        by_group[group] = (roles, min(first, created_at))
    return [GroupMapping(group, tuple(sorted(roles)), created) for group, (roles, created) in by_group.items()]
