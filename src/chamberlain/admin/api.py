"""The admin API: a FastAPI application the gateway mounts at {issuer}/admin/api for every tenant (the default
tenant's at /admin/api, tenant T's at /t/T/admin/api), apart from the public OAuth and MCP surfaces (as Ory Hydra
keeps its admin API apart from its public one).

Resources follow Keycloak's admin REST API (one collection per concept, ids in paths, a tenant's objects only), with
Hydra-style opaque page tokens. Every route is authenticated and authorised before its body is read (admin/auth.py),
every change is recorded in the audit log before it is made (admin/common.py), and every error is an RFC 9457
problem (admin/problems.py). The OpenAPI document is at /openapi.json under the mount point and is public: it
describes the API, not any tenant's data.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from chamberlain.admin import clients, consents, cost, groups, quotas, roles, servers, sessions, tenants, users
from chamberlain.admin.auth import AdminGate
from chamberlain.admin.problems import PROBLEM_MEDIA_TYPE, ErrorContainment, install_problem_handlers

_DESCRIPTION = """\
Manage one tenant of Chamberlain: users, roles, group mappings, OAuth clients, consents, MCP servers, browser
sessions and quotas; on the default tenant also the tenants themselves.

Authenticate with `Authorization: Bearer <access token>` for the resource `{issuer}/admin/api` (RFC 8707), or with
the tenant's browser session (send `X-CSRF-Token` from `GET /me` with unsafe methods). The user needs a role with
`administrative_functions`. Errors are `application/problem+json` (RFC 9457). Objects of another tenant are not
found (404), never forbidden.
"""


def create_admin_api() -> FastAPI:
    app = FastAPI(
        title="Chamberlain admin API",
        version="1",
        description=_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # the Swagger UI loads scripts from a CDN: not on an admin surface
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        generate_unique_id_function=lambda route: route.name,  # operationId: list_users, create_user, …
    )
    install_problem_handlers(app)
    for module in (users, roles, groups, clients, consents, servers, sessions, quotas, tenants, cost):
        app.include_router(module.router)
    app.add_middleware(AdminGate)
    app.add_middleware(ErrorContainment)  # added last: the outermost layer

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_documents(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to adjust the document
    return app


def _problem_documents(document: dict[str, Any]) -> dict[str, Any]:
    """Error responses are problem documents: declared as application/problem+json rather than FastAPI's
    application/json, and without FastAPI's unused validation-error schemas."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status[:1] in ("4", "5") and content and "application/json" in content:
                    response["content"] = {PROBLEM_MEDIA_TYPE: content["application/json"]}
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
