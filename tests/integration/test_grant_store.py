"""The grant store's single-use rules, on both databases, below the HTTP layer."""

from __future__ import annotations

import time

from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.store.grants import AuthorizationCode, Grant, GrantRepository
from chamberlain.store.tenants import ensure_tenant
from tests.support.server import RunningServer, random_name


def accept(grant: Grant) -> None:
    """A validation that lets every request through."""


async def test_a_refresh_token_is_invisible_to_another_tenant(server: RunningServer) -> None:
    other_tenant = random_name("tenant")
    async with server.engine() as database:
        await ensure_tenant(database, other_tenant)
        theirs = GrantRepository(database, other_tenant)
        ours = GrantRepository(database, server.settings.tenant)
        code = new_secret()
        await theirs.add_code(
            digest(code),
            AuthorizationCode(
                client_id="c",
                user_id="u",
                redirect_uri="http://127.0.0.1/cb",
                redirect_uri_given=True,
                scope="mcp:tools",
                resource="r",
                code_challenge=None,
                auth_time=time.time(),
                expires_at=time.time() + 60,
            ),
        )
        grant = (await theirs.redeem_code(digest(code), grant_ttl=600, validate=lambda _: None)).grant
        assert grant is not None
        token = new_secret()
        await theirs.add_refresh_token(digest(token), grant, "mcp:tools")

        foreign = await ours.rotate_refresh_token(digest(token), digest(new_secret()), accept)
        assert foreign.grant is None
        assert not foreign.reused
        assert await ours.find_refresh_token(digest(token)) is None

        # The refused attempt changed nothing: the owner can still rotate it exactly once.
        first = await theirs.rotate_refresh_token(digest(token), digest(new_secret()), accept)
        assert first.grant is not None
        assert not first.reused
        again = await theirs.rotate_refresh_token(digest(token), digest(new_secret()), accept)
        assert again.reused
