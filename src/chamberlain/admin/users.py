"""/users: the tenant's local accounts (Keycloak's /admin/realms/{realm}/users, with Hydra-style page tokens),
and /me, the caller."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from chamberlain.admin.auth import Admin, Administrator, is_administrator
from chamberlain.admin.common import (
    DEFAULT_PAGE_SIZE,
    PRINTABLE,
    PageSize,
    PageToken,
    check_quota,
    decode_position,
    encode_position,
    instant,
    location,
    problems,
    record_change,
    username_reference,
    when,
)
from chamberlain.admin.models import Me, UserCreate, UserOut, UserPage, UserRevocation, UserUpdate
from chamberlain.admin.problems import FieldProblem, ProblemError, invalid_body_field
from chamberlain.identity.passwords import PasswordPolicyError, hash_password
from chamberlain.sessions.revocation import revoke_user as revoke_everything
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant

router = APIRouter(tags=["users"])
UserId = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE, description="the user's id")]


@router.get("/me", response_model=Me, responses=problems(), summary="Who the caller is")
async def me(admin: Admin) -> Me:
    return Me(
        user_id=admin.user.id,
        username=admin.user.username,
        roles=list(admin.user.roles),
        tenant=admin.tenant.id,
        platform=admin.platform,
        authenticated_by=admin.via,
        csrf_token=admin.csrf_token(),
    )


@router.get("/users", response_model=UserPage, responses=problems(400), summary="List users")
async def list_users(
    admin: Admin,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    page_token: PageToken = None,
    username: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=PRINTABLE, description="only the user of this name")
    ] = None,
) -> UserPage:
    users = admin.tenant.users
    if username is not None:
        found = await users.get_by_username(username)
        return UserPage(items=[user_out(found)] if found else [], next_page_token=None)
    after = decode_position(page_token, str)
    # One more than asked tells whether another page follows without a count query.
    found_page = await users.page(after=after, limit=page_size + 1)
    items = found_page[:page_size]
    more = len(found_page) > page_size
    return UserPage(
        items=[user_out(user) for user in items], next_page_token=encode_position(items[-1].username) if more else None
    )


@router.post(
    "/users", response_model=UserOut, status_code=201, responses=problems(409, 503), summary="Create a local user"
)
async def create_user(body: UserCreate, request: Request, response: Response, admin: Admin) -> UserOut:
    tenant = admin.tenant
    roles = tuple(dict.fromkeys(body.roles))
    check_roles_defined(tenant, roles, "/roles")
    await check_quota(admin, "users")
    if await tenant.users.get_by_username(body.username) is not None:
        raise ProblemError(409, "a user of that name already exists", kind="already-exists")
    try:
        # argon2id costs 64 MiB and tens of milliseconds: off the event loop.
        password_hash = await asyncio.to_thread(hash_password, body.password.get_secret_value())
    except PasswordPolicyError as problem:
        raise invalid_body_field("/password", str(problem)) from None
    await record_change(
        admin,
        request,
        target=username_reference(admin, body.username),
        after={"roles": list(roles), "must_change_password": body.must_change_password},
    )
    try:
        user = await tenant.users.add(
            body.username, password_hash, roles, must_change_password=body.must_change_password
        )
    except AlreadyExists:
        raise ProblemError(409, "a user of that name already exists", kind="already-exists") from None
    response.headers["Location"] = location(request, f"/users/{user.id}")
    return user_out(user)


@router.get("/users/{user_id}", response_model=UserOut, responses=problems(), summary="Get a user")
async def get_user(user_id: UserId, admin: Admin) -> UserOut:
    return user_out(await existing_user(admin.tenant, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    responses=problems(409, 503),
    summary="Change a user's roles or disable the account",
    description="A change of roles, or disabling, revokes the user's grants: tokens carrying the old roles stop "
    "working within seconds, and browser sessions are renewed (or end) on their next use.",
)
async def update_user(body: UserUpdate, request: Request, user_id: UserId, admin: Admin) -> UserOut:
    tenant = admin.tenant
    user = await existing_user(tenant, user_id)
    roles = tuple(dict.fromkeys(body.roles)) if body.roles is not None else None
    if roles is not None:
        check_roles_defined(tenant, roles, "/roles")
    if user.id == admin.user.id and (body.disabled or (roles is not None and not is_administrator(tenant, roles))):
        raise ProblemError(
            409,
            "administrators cannot disable themselves or remove their own administrative roles; ask another one",
            kind="self-lockout",
        )
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    if roles is not None and roles != user.roles:
        before["roles"], after["roles"] = list(user.roles), list(roles)
    if body.disabled is not None and body.disabled != user.disabled:
        before["disabled"], after["disabled"] = user.disabled, body.disabled
    if not after:
        return user_out(user)
    await record_change(admin, request, target=f"user:{user.id}", before=before, after=after)
    updated = await tenant.users.update_account(user.id, roles=roles, disabled=body.disabled)
    if updated is None:
        raise _not_found()
    if "roles" in after or after.get("disabled") is True:
        await revoke_grants(tenant, user.id, "roles_changed" if "roles" in after else "user_disabled")
    return user_out(updated)


@router.delete(
    "/users/{user_id}",
    status_code=204,
    response_class=Response,
    responses=problems(409, 503),
    summary="Delete a user",
    description="Revokes the user's grants, sessions and consents, then deletes the account.",
)
async def delete_user(request: Request, user_id: UserId, admin: Admin) -> Response:
    tenant = admin.tenant
    user = await existing_user(tenant, user_id)
    if user.id == admin.user.id:
        raise ProblemError(409, "administrators cannot delete themselves; ask another one", kind="self-lockout")
    await record_change(
        admin, request, target=f"user:{user.id}", before={"roles": list(user.roles)}, after={"deleted": True}
    )
    await sign_out_everywhere(tenant, user.id, "user_deleted")
    await tenant.users.remove(user.id)
    return Response(status_code=204)


@router.delete(
    "/users/{user_id}/sessions",
    response_model=UserRevocation,
    responses=problems(503),
    tags=["sessions"],
    summary="Sign a user out everywhere",
    description="Ends the user's browser sessions, revokes their grants (refresh tokens and the access tokens "
    "issued from them) and withdraws their consents, so every client must ask again.",
)
async def revoke_user(request: Request, user_id: UserId, admin: Admin) -> UserRevocation:
    user = await existing_user(admin.tenant, user_id)
    return await sign_out(admin, request, user)


async def sign_out(admin: Administrator, request: Request, user: User) -> UserRevocation:
    """Records it first, then signs the user out everywhere (also the console's "Sign out everywhere")."""
    await record_change(admin, request, target=f"user:{user.id}", after={"signed_out_everywhere": True})
    return await sign_out_everywhere(admin.tenant, user.id, "user_signed_out")


# -- shared with the other resources ---------------------------------------------------------------------------------


async def existing_user(tenant: Tenant, user_id: str) -> User:
    user = await tenant.users.get(user_id)
    if user is None:
        raise _not_found()
    return user


def user_out(user: User) -> UserOut:
    locked = user.locked_until is not None and user.locked_until > time.time()
    created = instant(user.created_at)
    return UserOut(
        id=user.id,
        username=user.username,
        roles=list(user.roles),
        disabled=user.disabled,
        locked=locked,
        locked_until=when(user.locked_until) if locked else None,
        mfa_enrolled=user.totp_secret is not None,
        must_change_password=user.must_change_password,
        created_at=created,
        last_login_at=when(user.last_login_at),
    )


def check_roles_defined(tenant: Tenant, roles: tuple[str, ...], pointer: str) -> None:
    """A role the tenant's document does not define grants nothing: almost certainly a typo, so refuse it."""
    defined = tenant.roles.enterprise_roles
    errors = [
        FieldProblem(location="body", pointer=f"{pointer}/{index}", message=f"the role {role!r} is not defined")
        for index, role in enumerate(roles)
        if role not in defined
    ]
    if errors:
        raise ProblemError(
            422,
            "the request names roles this tenant does not define",
            kind="invalid-request",
            extensions={"errors": [error.model_dump() for error in errors]},
        )


async def revoke_grants(tenant: Tenant, user_id: str, reason: str, *, client_id: str | None = None) -> int:
    """Revokes the user's live grants (optionally one client's) and applies the revocations in this process now;
    other processes pick them up from the feed within a second."""
    grant_ids = await tenant.users.active_grant_ids(user_id, client_id=client_id)
    for grant_id in grant_ids:
        await tenant.grants.revoke_grant(grant_id, reason)
    if grant_ids:
        await tenant.sync_revocations()
    return len(grant_ids)


async def sign_out_everywhere(tenant: Tenant, user_id: str, reason: str) -> UserRevocation:
    done = await revoke_everything(
        user_id,
        users=tenant.users,
        grants=tenant.grants,
        consents=tenant.consents,
        sessions=tenant.browser_sessions,
        reason=reason,
    )
    if done.grants:
        await tenant.sync_revocations()
    return UserRevocation(sessions_revoked=done.sessions, grants_revoked=done.grants, consents_withdrawn=done.consents)


def _not_found() -> ProblemError:
    return ProblemError(404, "no such user in this tenant")
