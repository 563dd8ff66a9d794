"""Which tenant a request is for: the default tenant at the root, tenant T under /t/T (its issuer's path)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Scope

from chamberlain.tenancy.tenant import Tenant

if TYPE_CHECKING:
    from chamberlain.state import AppState


def app_state(connection: HTTPConnection) -> AppState:
    # Lifespan state reaches mounted sub-applications (the admin API) too, unlike `request.app.state`.
    return cast("AppState", connection.state.chamberlain)


def tenant_of(connection: HTTPConnection) -> Tenant:
    """The request path's tenant; HTTP 404 when there is none."""
    tenant = tenant_for_scope(connection.scope)
    if tenant is None:
        raise HTTPException(404, "no such tenant")
    return tenant


def tenant_for_scope(scope: Scope) -> Tenant | None:
    """None for an unknown tenant, and for the default tenant's id under /t/ (one canonical URL per issuer)."""
    state = cast("AppState", scope["state"]["chamberlain"])
    tenant_id = scope["path_params"].get("tenant")
    if tenant_id is None:
        return state.default_tenant
    return state.tenants.get(tenant_id) if tenant_id != state.settings.tenant else None
