"""/clients: the OAuth clients that registered (RFC 7591) or signed in with a metadata document (CIMD), and their
revocation. A client id may be a URL, so it is the rest of the path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from chamberlain.admin.auth import Admin
from chamberlain.admin.common import (
    DEFAULT_PAGE_SIZE,
    PRINTABLE,
    PageSize,
    PageToken,
    decode_position,
    encode_position,
    instant,
    problems,
    record_change,
    when,
)
from chamberlain.admin.models import ClientOut, ClientPage, ClientRevocation
from chamberlain.admin.problems import ProblemError
from chamberlain.store.clients import ClientRecord

router = APIRouter(tags=["clients"])
ClientId = Annotated[str, Path(min_length=1, max_length=2000, pattern=PRINTABLE, description="the client_id")]
_SECRET_WORDS = ("secret", "password", "private")


@router.get("/clients", response_model=ClientPage, responses=problems(400), summary="List OAuth clients")
async def list_clients(
    admin: Admin,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    page_token: PageToken = None,
) -> ClientPage:
    after = decode_position(page_token, str)
    found = await admin.tenant.clients.page(after=after, limit=page_size + 1)
    items = found[:page_size]
    more = len(found) > page_size
    return ClientPage(
        items=[client_out(client) for client in items],
        next_page_token=encode_position(items[-1].client_id) if more else None,
    )


@router.get("/clients/{client_id:path}", response_model=ClientOut, responses=problems(), summary="Get a client")
async def get_client(client_id: ClientId, admin: Admin) -> ClientOut:
    client = await admin.tenant.clients.get(client_id)
    if client is None:
        raise _not_found()
    return client_out(client)


@router.post(
    "/clients/{client_id:path}/revoke",
    response_model=ClientRevocation,
    responses=problems(409, 503),
    summary="Revoke a client",
    description="Ends the client's registration, revokes its grants and every token it holds, and withdraws "
    "the consents users gave it (as `chamberlain clients revoke`).",
)
async def revoke_client(client_id: ClientId, request: Request, admin: Admin) -> ClientRevocation:
    tenant = admin.tenant
    client = await tenant.clients.get(client_id)
    if client is None:
        raise _not_found()
    if client.revoked_at is not None:
        raise ProblemError(409, "the client is already revoked", kind="already-revoked")
    await record_change(admin, request, target=f"client:{client_id}", after={"revoked": True})
    await tenant.clients.revoke(client_id)
    revoked = await tenant.grants.revoke_client_grants(client_id, "client_revoked")
    await tenant.grants.revoke_client_tokens(client_id, longest_token_lifetime=tenant.settings.tokens.access_token_ttl)
    await tenant.consents.withdraw_client(client_id)
    await tenant.sync_revocations()
    updated = await tenant.clients.get(client_id)
    assert updated is not None
    return ClientRevocation(client=client_out(updated), grants_revoked=revoked)


def client_out(client: ClientRecord) -> ClientOut:
    metadata = {
        key: value
        for key, value in client.client_metadata.items()
        if not any(word in key.lower() for word in _SECRET_WORDS) or key.endswith("_expires_at")
    }
    created = instant(client.created_at)
    return ClientOut(
        client_id=client.client_id,
        registration=client.registration,
        client_name=_text(metadata.get("client_name")),
        redirect_uris=_texts(metadata.get("redirect_uris")),
        grant_types=_texts(metadata.get("grant_types")),
        token_endpoint_auth_method=_text(metadata.get("token_endpoint_auth_method")),
        scope=_text(metadata.get("scope")),
        created_at=created,
        revoked_at=when(client.revoked_at),
        metadata=metadata,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _not_found() -> ProblemError:
    return ProblemError(404, "no such client in this tenant")
