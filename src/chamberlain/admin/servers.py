"""/servers: the upstream MCP servers this tenant fronts, each a protected resource at {issuer}/mcp/{name}.

Registration goes through the same `ServerConfig` model as `chamberlain servers add` and the configuration file.
Secret values (a header's value, a client secret, a stdio server's environment) are accepted, stored encrypted
and never returned: answers say whether one is set. Servers of the configuration file are shown but changed only
there.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request, Response
from pydantic import SecretStr, ValidationError

from chamberlain.admin.auth import Admin
from chamberlain.admin.common import check_quota, location, problems, record_change, when
from chamberlain.admin.models import CredentialOut, ServerCreate, ServerList, ServerOut
from chamberlain.admin.problems import FieldProblem, ProblemError, field_problem
from chamberlain.gateway.server_config import DEFAULT_SCOPES, ServerConfig
from chamberlain.net.ssrf import AddressPolicy, BlockedAddressError
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.servers import Server, configured_servers, merge_servers
from chamberlain.tenancy.tenant import Tenant

router = APIRouter(tags=["servers"])
ServerNamePath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="the server's name")]
_MASK = "**********"


@router.get("/servers", response_model=ServerList, responses=problems(), summary="List MCP servers")
async def list_servers(admin: Admin) -> ServerList:
    return ServerList(items=[server_out(admin.tenant, server) for server in await effective_servers(admin.tenant)])


@router.get("/servers/{name}", response_model=ServerOut, responses=problems(), summary="Get an MCP server")
async def get_server(name: ServerNamePath, admin: Admin) -> ServerOut:
    server = next((server for server in await effective_servers(admin.tenant) if server.name == name), None)
    if server is None:
        raise _not_found()
    return server_out(admin.tenant, server)


@router.post(
    "/servers",
    response_model=ServerOut,
    status_code=201,
    responses=problems(409, 503),
    summary="Register an MCP server (streamable HTTP)",
)
async def add_server(body: ServerCreate, request: Request, response: Response, admin: Admin) -> ServerOut:
    tenant = admin.tenant
    if body.name in _file_servers(tenant):
        raise ProblemError(409, "a server of that name is defined in the configuration file", kind="configured-in-file")
    config = _server_config(body)
    _refuse_internal_address(tenant, config)
    if await tenant.servers.get(body.name) is not None:
        raise ProblemError(409, "a server of that name already exists", kind="already-exists")
    await check_quota(admin, "servers")
    await record_change(admin, request, target=f"server:{body.name}", after=recordable(config))
    try:
        server = await tenant.servers.add(body.name, config)
    except AlreadyExists:
        raise ProblemError(409, "a server of that name already exists", kind="already-exists") from None
    await tenant.shared.refresh()  # reachable through this process at once; other replicas within a second
    response.headers["Location"] = location(request, f"/servers/{server.name}")
    return server_out(tenant, server)


@router.delete(
    "/servers/{name}",
    status_code=204,
    response_class=Response,
    responses=problems(409, 503),
    summary="Remove an MCP server",
)
async def remove_server(name: ServerNamePath, request: Request, admin: Admin) -> Response:
    tenant = admin.tenant
    existing = await tenant.servers.get(name)
    if existing is None:
        if name in _file_servers(tenant):
            raise ProblemError(
                409, "the server is defined in the configuration file: remove it there", kind="configured-in-file"
            )
        raise _not_found()
    before = recordable(existing.config) if existing.config is not None else {"built_in": True}
    await record_change(admin, request, target=f"server:{name}", before=before, after={})
    await tenant.servers.remove(name)
    await tenant.shared.refresh()
    return Response(status_code=204)


async def effective_servers(tenant: Tenant) -> list[Server]:
    """The stored servers, overridden by the configuration file's of the same name (default tenant only)."""
    configured = configured_servers(tenant.settings) if tenant.id == tenant.settings.tenant else []
    servers, _ = merge_servers(configured, await tenant.servers.list())
    return servers


def _file_servers(tenant: Tenant) -> set[str]:
    return set(tenant.settings.servers) if tenant.id == tenant.settings.tenant else set()


def _refuse_internal_address(tenant: Tenant, config: ServerConfig) -> None:
    """A tenant's admin is not the platform's: pointing the gateway at loopback, private or link-local addresses
    (the metadata service, the database) would turn it into their proxy into this network (SSRF). Only the
    default tenant, run by the platform team, may register such upstreams. Names are not resolved here, so a name
    that resolves inward is not caught by this check."""
    if tenant.id == tenant.settings.tenant or config.url is None:
        return
    host = urlsplit(config.url).hostname or ""
    try:
        if host == "localhost" or host.endswith(".localhost"):
            raise BlockedAddressError(f"{host} is a loopback name")
        if _is_ip_literal(host):
            AddressPolicy().check(host)
    except BlockedAddressError as blocked:
        raise ProblemError(
            422,
            f"this tenant may not register an upstream on an internal address ({blocked})",
            kind="internal-address",
        ) from None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _server_config(body: ServerCreate) -> ServerConfig:
    credential: dict[str, Any] = {
        key: value.get_secret_value() if isinstance(value, SecretStr) else value
        for key, value in body.credential
        if value is not None
    }
    fields: dict[str, Any] = {
        "url": body.url,
        "scopes": tuple(body.scopes) if body.scopes is not None else DEFAULT_SCOPES,
        "external": body.external,
        "credential": credential,
    }
    if body.timeout is not None:
        fields["timeout"] = body.timeout
    if body.max_message_bytes is not None:
        fields["max_message_bytes"] = body.max_message_bytes
    try:
        return ServerConfig.model_validate(fields)
    except ValidationError as invalid:
        errors = [field_problem({**error, "loc": ("body", *error["loc"])}) for error in invalid.errors()]
        # A tagged union's branch name is pydantic's, not the document's ("credential/header/value").
        errors = [_without_branch(error, credential.get("type")) for error in errors]
        raise ProblemError(
            422,
            "the server configuration is not valid",
            kind="invalid-request",
            extensions={"errors": [error.model_dump() for error in errors]},
        ) from None


def _without_branch(error: FieldProblem, branch: object) -> FieldProblem:
    prefix = f"/credential/{branch}"
    if isinstance(branch, str) and (error.pointer == prefix or error.pointer.startswith(prefix + "/")):
        return error.model_copy(update={"pointer": "/credential" + error.pointer[len(prefix) :]})
    return error


def recordable(config: ServerConfig) -> dict[str, Any]:
    """The configuration as the audit log may keep it: secret values masked (as cli/servers.py records it)."""
    shown: dict[str, Any] = config.model_dump(mode="json")  # SecretStr fields dump as "**********"
    shown["env"] = {key: _MASK for key in config.env}
    return shown


def server_out(tenant: Tenant, server: Server) -> ServerOut:
    config = server.config
    if config is None:
        return ServerOut(
            name=server.name,
            resource=tenant.resource_url(server.name),
            source=server.source,
            transport="built-in",
            url=None,
            command=None,
            env_names=[],
            scopes=list(server.scopes),
            external=False,
            timeout=None,
            max_message_bytes=None,
            credential=CredentialOut(type="none", secret_set=False),
            created_at=when(server.created_at),
        )
    credential = config.credential
    shown = {
        name: value
        for name, value in credential.model_dump().items()
        if name in CredentialOut.model_fields and not isinstance(getattr(credential, name), SecretStr)
    }
    # An inline secret not given is an empty SecretStr (the credential names a vault secret instead).
    secret_set = any(
        isinstance(value, SecretStr) and bool(value.get_secret_value())
        for value in (getattr(credential, name) for name in type(credential).model_fields)
    )
    return ServerOut(
        name=server.name,
        resource=tenant.resource_url(server.name),
        source=server.source,
        transport="stdio" if config.command is not None else "http",
        url=config.url,
        command=list(config.command) if config.command is not None else None,
        env_names=sorted(config.env),
        scopes=list(server.scopes),
        external=config.external,
        timeout=config.timeout,
        max_message_bytes=config.max_message_bytes,
        credential=CredentialOut(**shown, secret_set=secret_set),
        created_at=when(server.created_at),
    )


def _not_found() -> ProblemError:
    return ProblemError(404, "no such server in this tenant")
