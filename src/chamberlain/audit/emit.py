"""The audit events of the authorization server and the sign-in pages, built in one place.

Each emitter queues its event (`AuditLog.record`): none of these actions is fail-closed by default, so none waits.
Who acted is a stable id; names and addresses go in the personal fields, encrypted per data subject. Usernames
that match no user are recorded as keyed hashes, so failed sign-ins can be counted per target without storing
whatever was typed into the username field.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.requests import Request

from chamberlain.audit.events import Action, Actor, AuditEvent, Outcome
from chamberlain.audit.log import AuditLog
from chamberlain.crypto.master_key import MasterKey
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.web.request_id import request_id_of

_GRANT_ACTIONS = {"refresh_token": Action.TOKEN_REFRESHED}


def keyed_hash_key(master_key: MasterKey) -> bytes:
    """The HMAC key for keyed hashes in the audit log: one per store, so hashes compare across events."""
    return master_key.derive("audit-keyed-hash")


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of a value the log must recognise but not reveal (RFC 2104)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def source_ip(request: Request) -> dict[str, str]:
    return {"source_ip": request.client.host} if request.client else {}


def sign_in(
    log: AuditLog,
    request: Request,
    tenant: str,
    *,
    user_id: str | None,
    username_hash: str,
    outcome: Outcome,
    reason: str | None,
    second_factor: bool = False,
    method: str = "local",
    provider: str | None = None,
) -> None:
    """A sign-in attempt; with `second_factor`, also the MFA step it passed (TOTP, RFC 6238). `method`: "local",
    "oidc", "saml", "ldap", or "totp" for a step-up after an IdP; `provider`: the identity provider's name."""
    actor = Actor("user", user_id) if user_id else Actor("user", f"unknown:{username_hash[:16]}")
    actions = [Action.SIGN_IN, Action.MFA] if second_factor else [Action.SIGN_IN]
    if method == "totp":  # a step-up: the sign-in itself was recorded with its provider's method
        actions = [Action.MFA]
    for action in actions:
        details = {"method": "totp" if action is Action.MFA else method, "username_hash": username_hash}
        if provider is not None:
            details["provider"] = provider
        log.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                tenant=tenant,
                actor=actor,
                target=f"user:{user_id}" if user_id else None,
                reason=reason,
                details=details,
                personal=source_ip(request),
                subject=user_id,
                request_id=request_id_of(request.scope),
            )
        )


def token_issued(log: AuditLog, request: Request, grant_type: str, claims: AccessTokenClaims) -> None:
    user = claims.subject if claims.subject != claims.client_id else None
    log.record(
        AuditEvent(
            action=_GRANT_ACTIONS.get(grant_type, Action.TOKEN_ISSUED),
            outcome="success",
            tenant=claims.tenant,
            actor=Actor("user", user) if user else Actor("client", claims.client_id),
            target=f"resource:{','.join(claims.audience)}",
            details={
                "grant_type": grant_type,
                "client_id": claims.client_id,
                "scope": " ".join(sorted(claims.scopes)),
                "jti": claims.jti,
                "grant_id": claims.grant_id,
            },
            personal=source_ip(request),
            subject=user,
            request_id=request_id_of(request.scope),
        )
    )


def token_refused(log: AuditLog, tenant: str, grant_type: str, client_id: str | None, error: str) -> None:
    log.record(
        AuditEvent(
            action=_GRANT_ACTIONS.get(grant_type, Action.TOKEN_ISSUED),
            outcome="denied",
            tenant=tenant,
            actor=Actor("client", client_id or "unauthenticated"),
            reason=error,
            details={"grant_type": grant_type},
        )
    )


def client_event(log: AuditLog, tenant: str, action: Action, client_id: str, details: Mapping[str, object]) -> None:
    log.record(
        AuditEvent(
            action=action,
            outcome="success",
            tenant=tenant,
            actor=Actor("client", client_id),
            target=f"client:{client_id}",
            details=details,
        )
    )


def consent(
    log: AuditLog, tenant: str, user_id: str, client_id: str, *, given: bool, scope: str, resource: str
) -> None:
    log.record(
        AuditEvent(
            action=Action.CONSENT_GIVEN if given else Action.CONSENT_WITHDRAWN,
            outcome="success",
            tenant=tenant,
            actor=Actor("user", user_id),
            target=f"client:{client_id}",
            details={"scope": scope, "resource": resource},
        )
    )


def session_created(log: AuditLog, request: Request, tenant: str, user_id: str, *, mfa: bool) -> None:
    """A browser session began (the session id itself is never recorded)."""
    log.record(
        AuditEvent(
            action=Action.SESSION_CREATED,
            outcome="success",
            tenant=tenant,
            actor=Actor("user", user_id),
            target=f"user:{user_id}",
            details={"mfa": mfa},
            personal=source_ip(request),
            subject=user_id,
            request_id=request_id_of(request.scope),
        )
    )
