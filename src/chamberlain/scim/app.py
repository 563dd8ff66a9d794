"""The SCIM service provider of a tenant, at `{issuer}/scim/v2` (RFC 7644 §3.2), authenticated by the tenant's
bearer token (RFC 6750). Every answer, errors included, is application/scim+json."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chamberlain.scim import groups, users
from chamberlain.scim.errors import ScimError, scim_response
from chamberlain.scim.resources import ResourceKind
from chamberlain.scim.schema import list_response as listed
from chamberlain.scim.schema import resource_types, schemas, service_provider_config
from chamberlain.scim.service import Provisioning
from chamberlain.scim.tokens import is_valid
from chamberlain.store.errors import RETRY_AFTER_SECONDS, store_unavailable
from chamberlain.tenancy.routing import tenant_of

logger = logging.getLogger(__name__)
SCIM_PATH = "/scim/v2"
Handler = Callable[[Provisioning, Request], Awaitable[Response]]


def create_scim_app() -> Starlette:
    """Mounted at SCIM_PATH in every tenant's surface (app.py `_tenant_routes`)."""
    routes = [
        Route("/ServiceProviderConfig", _endpoint(_service_provider_config), methods=["GET"]),
        Route("/ResourceTypes", _endpoint(_resource_types), methods=["GET"]),
        Route("/ResourceTypes/{id}", _endpoint(_resource_type), methods=["GET"]),
        Route("/Schemas", _endpoint(_schemas), methods=["GET"]),
        Route("/Schemas/{id}", _endpoint(_schema), methods=["GET"]),
        *_resource_routes("/Users", users.USERS, users.create_user, users.delete_user),
        *_resource_routes("/Groups", groups.GROUPS, groups.create_group, groups.delete_group),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _unexpected_error})


def _resource_routes(path: str, kind: ResourceKind[Any, Any], create: Handler, delete: Handler) -> list[Route]:
    """RFC 7644 §3.2: a resource type's endpoint and each of its resources' ({path}/{id})."""
    return [
        Route(path, _endpoint(kind.list_all), methods=["GET"]),
        Route(path, _endpoint(create), methods=["POST"]),
        Route(f"{path}/{{id}}", _endpoint(kind.get), methods=["GET"]),
        Route(f"{path}/{{id}}", _endpoint(kind.replace), methods=["PUT"]),
        Route(f"{path}/{{id}}", _endpoint(kind.patch), methods=["PATCH"]),
        Route(f"{path}/{{id}}", _endpoint(delete), methods=["DELETE"]),
    ]


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(await _authenticated(request), request)
        except ScimError as error:
            return error.to_response()

    return endpoint


async def _authenticated(request: Request) -> Provisioning:
    tenant = tenant_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        # RFC 6750 §3.1: no credentials, no error code.
        raise ScimError(401, "the SCIM bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="scim"'})
    if not await is_valid(tenant.database, tenant.master_key, tenant.id, token):
        raise ScimError(
            401,
            "the SCIM bearer token is not valid for this tenant",
            headers={"WWW-Authenticate": 'Bearer realm="scim", error="invalid_token"'},
        )
    return Provisioning(tenant, request)


async def _service_provider_config(provisioning: Provisioning, request: Request) -> Response:
    return scim_response(service_provider_config(provisioning.base))


async def _resource_types(provisioning: Provisioning, request: Request) -> Response:
    found = resource_types(provisioning.base)
    return scim_response(listed(found, total=len(found), start_index=1))


async def _resource_type(provisioning: Provisioning, request: Request) -> Response:
    return _one(resource_types(provisioning.base), request)


async def _schemas(provisioning: Provisioning, request: Request) -> Response:
    found = schemas(provisioning.base)
    return scim_response(listed(found, total=len(found), start_index=1))


async def _schema(provisioning: Provisioning, request: Request) -> Response:
    return _one(schemas(provisioning.base), request)


def _one(documents: list[dict[str, object]], request: Request) -> Response:
    wanted = request.path_params["id"]
    for document in documents:
        if document["id"] == wanted:
            return scim_response(document)
    raise ScimError(404, "no such resource")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A mounted application answers its own errors: a SCIM error too, never Starlette's plain-text 500."""
    if store_unavailable(exc):  # the store is down: the IdP's client retries later (RFC 9110 §10.2.3)
        response = ScimError(503, "the service is unavailable; try again later").to_response()
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return ScimError(500, "the request cannot be served").to_response()


async def _http_error(request: Request, exc: Exception) -> Response:
    # An unknown path, method or tenant: still a SCIM error (RFC 7644 §3.12).
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = "there is no such resource here" if status == 404 else "the request cannot be served"
    return ScimError(status, detail).to_response()
