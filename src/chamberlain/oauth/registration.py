"""Dynamic client registration (RFC 7591 §3).

Open registration is what MCP clients expect (the 2025-06-18 and 2025-11-25 revisions); it is safe because a
registered client gets nothing by itself: every authorization still needs a person's sign-in and consent, and
client credentials are limited to the scopes an administrator grants.
"""

from __future__ import annotations

import json
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chamberlain.audit import emit
from chamberlain.audit.events import Action
from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.oauth.client_metadata import parse_client_metadata
from chamberlain.oauth.errors import INVALID_CLIENT_METADATA, NO_STORE, QUOTA_EXCEEDED, OAuthError
from chamberlain.oauth.forms import read_body
from chamberlain.policy.quotas import check_can_add
from chamberlain.tenancy.routing import tenant_of


async def register(request: Request) -> Response:
    """POST /register"""
    app = tenant_of(request)
    try:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise OAuthError(INVALID_CLIENT_METADATA, "the body must be application/json")
        try:
            document = json.loads(await read_body(request))
        except (ValueError, UnicodeDecodeError):
            raise OAuthError(INVALID_CLIENT_METADATA, "the body is not valid JSON") from None
        metadata = parse_client_metadata(document)
        refusal = await check_can_add(app.shared.tenant_store, app.id, app.config.quotas, "clients")
        if refusal is not None:
            # RFC 7591 §3.2.2 lets a server refuse a registration; the error code is ours (no registered one fits).
            raise OAuthError(QUOTA_EXCEEDED, refusal, status_code=403)
    except OAuthError as failure:
        return failure.to_response()
    client_id = str(uuid.uuid4())
    secret = new_secret() if metadata.uses_secret else None
    await app.clients.add(client_id, "dynamic", metadata.to_dict(), digest(secret) if secret else None)
    details = {"registration": "dynamic", "grant_types": list(metadata.grant_types)}
    emit.client_event(app.audit.log, app.id, Action.CLIENT_REGISTERED, client_id, details)
    # RFC 7591 §3.2.1: the response echoes the registered metadata, with the values the server chose.
    body = {**metadata.to_dict(), "client_id": client_id, "client_id_issued_at": int(time.time())}
    if secret is not None:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return JSONResponse(body, status_code=201, headers=NO_STORE)
