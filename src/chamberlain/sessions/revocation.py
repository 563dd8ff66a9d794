"""Revoking a user: every way they are signed in ends at once, in this order so nothing can be renewed midway."""

from __future__ import annotations

from dataclasses import dataclass

from chamberlain.store.browser_sessions import BrowserSessionRepository
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.grants import GrantRepository
from chamberlain.store.users import UserRepository


@dataclass(frozen=True)
class UserRevocation:
    sessions: int
    grants: int
    consents: int


async def revoke_user(
    user_id: str,
    *,
    users: UserRepository,
    grants: GrantRepository,
    consents: ConsentRepository,
    sessions: BrowserSessionRepository,
    reason: str = "user_revoked",
) -> UserRevocation:
    """Ends the user's browser sessions (no new consent or code), revokes their grants (refresh tokens, and the
    access tokens carrying those grant ids through the revocation feed) and withdraws their consents (the next
    authorization asks again)."""
    ended = await sessions.revoke_user(user_id)
    grant_ids = await users.active_grant_ids(user_id)
    for grant_id in grant_ids:
        await grants.revoke_grant(grant_id, reason)
    withdrawn = await consents.withdraw_user(user_id)
    return UserRevocation(ended, len(grant_ids), withdrawn)
