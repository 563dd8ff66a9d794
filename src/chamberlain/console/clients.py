"""OAuth clients and the consents users gave them; revoking a consent goes through the admin API's own function
(admin/consents.py `withdraw_consent`): audited first, then the consent and the grants it allowed are revoked."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.admin.clients import client_out
from chamberlain.admin.common import MAX_INTEGER_KEY
from chamberlain.admin.consents import withdraw_consent
from chamberlain.console.access import Viewer, not_found
from chamberlain.console.queries import usernames
from chamberlain.store.clients import ClientRecord

PAGE_SIZE = 50
_MAX_ID = 2000


async def clients(request: Request, viewer: Viewer) -> Response:
    after = request.query_params.get("after") or None
    found = await viewer.tenant.clients.page(after=after[:_MAX_ID] if after else None, limit=PAGE_SIZE + 1)
    shown = found[:PAGE_SIZE]
    context = {
        "title": "OAuth clients",
        "clients": [client_out(client) for client in shown],
        "next_after": shown[-1].client_id if len(found) > PAGE_SIZE else None,
    }
    return viewer.render("clients.html", context)


async def client(request: Request, viewer: Viewer) -> Response:
    found = await _client(viewer, request)
    consents = await viewer.tenant.consents.page(client_id=found.client_id, after=None, limit=500)
    names = await usernames(viewer.tenant.database, viewer.tenant.id, {consent.user_id for consent in consents})
    context = {"title": "OAuth client", "client": client_out(found), "consents": consents, "names": names}
    return viewer.render("client.html", context)


async def revoke_consent(request: Request, viewer: Viewer) -> Response:
    found = await _client(viewer, request)
    raw = str(request.path_params["consent_id"])
    consent_id = int(raw) if raw.isdigit() and len(raw) <= 10 else 0
    consent = await viewer.tenant.consents.get(consent_id) if 0 < consent_id <= MAX_INTEGER_KEY else None
    if consent is None or consent.client_id != found.client_id:
        raise not_found()
    await withdraw_consent(viewer.administrator, request, consent)
    return viewer.done(f"/clients/{found.client_id}", "consent-revoked")


async def _client(viewer: Viewer, request: Request) -> ClientRecord:
    client_id = str(request.path_params["client_id"])
    found = await viewer.tenant.clients.get(client_id) if len(client_id) <= _MAX_ID else None
    if found is None:
        raise not_found()
    return found
