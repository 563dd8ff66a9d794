"""/consents: what users allowed clients (Hydra's consent sessions), and withdrawing one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from chamberlain.admin.auth import Admin, Administrator
from chamberlain.admin.common import (
    DEFAULT_PAGE_SIZE,
    MAX_INTEGER_KEY,
    PRINTABLE,
    PageSize,
    PageToken,
    decode_position,
    encode_position,
    instant,
    problems,
    record_change,
)
from chamberlain.admin.models import ConsentOut, ConsentPage
from chamberlain.admin.problems import ProblemError
from chamberlain.admin.users import revoke_grants
from chamberlain.store.consents import Consent

router = APIRouter(tags=["consents"])


@router.get("/consents", response_model=ConsentPage, responses=problems(400), summary="List consents")
async def list_consents(
    admin: Admin,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE, description="only this user's")
    ] = None,
    client_id: Annotated[
        str | None, Query(min_length=1, max_length=2000, pattern=PRINTABLE, description="only for this client")
    ] = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    page_token: PageToken = None,
) -> ConsentPage:
    after = decode_position(page_token, int)
    found = await admin.tenant.consents.page(user_id=user_id, client_id=client_id, after=after, limit=page_size + 1)
    items = found[:page_size]
    more = len(found) > page_size
    return ConsentPage(
        items=[consent_out(consent) for consent in items],
        next_page_token=encode_position(items[-1].id) if more else None,
    )


@router.get("/consents/{consent_id}", response_model=ConsentOut, responses=problems(), summary="Get a consent")
async def get_consent(consent_id: Annotated[int, Path(ge=1, le=MAX_INTEGER_KEY)], admin: Admin) -> ConsentOut:
    consent = await admin.tenant.consents.get(consent_id)
    if consent is None:
        raise _not_found()
    return consent_out(consent)


@router.delete(
    "/consents/{consent_id}",
    status_code=204,
    response_class=Response,
    responses=problems(503),
    summary="Withdraw a consent",
    description="Also revokes the user's grants to that client: tokens obtained under the consent stop working, "
    "and the client must ask the user again.",
)
async def delete_consent(
    admin: Admin,
    consent_id: Annotated[int, Path(ge=1, le=MAX_INTEGER_KEY)],
    request: Request,
) -> Response:
    consent = await admin.tenant.consents.get(consent_id)
    if consent is None:
        raise _not_found()
    await withdraw_consent(admin, request, consent)
    return Response(status_code=204)


async def withdraw_consent(admin: Administrator, request: Request, consent: Consent) -> None:
    """Records the withdrawal first, then removes the consent and revokes the user's grants to that client (also
    the console's)."""
    tenant = admin.tenant
    await record_change(
        admin,
        request,
        target=f"consent:{consent.id}",
        before={"user_id": consent.user_id, "client_id": consent.client_id, "scope": consent.scope},
        after={"withdrawn": True},
    )
    await tenant.consents.remove(consent.id)
    await revoke_grants(tenant, consent.user_id, "consent_withdrawn", client_id=consent.client_id)


def consent_out(consent: Consent) -> ConsentOut:
    created = instant(consent.created_at)
    return ConsentOut(
        id=consent.id,
        user_id=consent.user_id,
        client_id=consent.client_id,
        redirect_uri=consent.redirect_uri,
        scope=consent.scope,
        resource=consent.resource,
        created_at=created,
    )


def _not_found() -> ProblemError:
    return ProblemError(404, "no such consent in this tenant")
