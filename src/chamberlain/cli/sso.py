"""`chamberlain sso`: a tenant's identity providers (sso/config.py), as administrators expect to add them:

    chamberlain sso add okta --issuer https://company.okta.com --client-id ID --client-secret-stdin --domain company.com
    chamberlain sso add entra --entra-tenant TENANT_ID --client-id ID --client-secret-stdin --domain company.com
    chamberlain sso add saml --metadata FILE|URL --domain company.com
    chamberlain sso add ldap --url ldaps://dc.corp:636 --bind-dn DN --bind-password-stdin --user-base DN ...
    chamberlain sso list | show NAME | test NAME | remove NAME

Secrets (client secrets, bind passwords) come only from standard input and go to the tenant's vault as `sso/NAME`,
bound to the vault upstream "sso"; the configuration holds the reference. Every value is validated by the provider's
model before anything is stored, and an error names the option. Each change is recorded in the audit log first.
`map GROUP ROLE...`, `unmap GROUP` and `mappings` keep the group to role mappings applied at each sign-in (the
admin API's /groups).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import getpass
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from cryptography import x509
from ldap3 import BASE  # type: ignore[import-untyped]
from ldap3.core.exceptions import LDAPException  # type: ignore[import-untyped]
from pydantic import ValidationError
from rich.table import Table

from chamberlain.audit.events import Actor
from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    fail,
    read_secret_from_stdin,
    record_admin_change,
    run,
    settings_from,
)
from chamberlain.cli.config import first_problem, update_stored_config, warn_if_file_overrides
from chamberlain.cli.vault import CredentialSpec, OpenedVault, opened_vault, recordable, store_credential, vault_errors
from chamberlain.gateway.server_config import split_vault_reference
from chamberlain.policy.roles import DEFAULT_ROLES
from chamberlain.settings import Settings
from chamberlain.sso.common_config import PROVIDER_NAME_PATTERN, ProviderBase
from chamberlain.sso.config import ProviderConfig
from chamberlain.sso.identity import IdentityProviderUnavailable
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.ldap.connections import Endpoint, discard
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.oidc.keys import IssuerKeys
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.sso.saml.metadata import MetadataError, fetch_idp_metadata, parse_idp_metadata
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.group_mappings import GroupMapping, GroupMappingRepository
from chamberlain.store.servers import SSO_BINDING
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.effective import load_effective_config
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind

app = typer.Typer(help="A tenant's identity providers (single sign-on).", no_args_is_help=True)
add_app = typer.Typer(help="Add an identity provider.", no_args_is_help=True)
app.add_typer(add_app, name="add")

SECTION = "sso"
SECRET_SOURCE = "sso"  # the vault source of every provider secret this command stores: sso/NAME
_NAME = re.compile(PROVIDER_NAME_PATTERN)
EXPIRY_WARNING_DAYS = 30

NameArgument = Annotated[str, typer.Argument(help="The provider's name (from `chamberlain sso list`).")]
NameOption = Annotated[str | None, typer.Option("--name", help="The provider's name (default: its kind or preset).")]
DomainOption = Annotated[
    list[str] | None,
    typer.Option("--domain", metavar="DOMAIN", help="An email domain it captures (repeatable)."),
]
DisplayNameOption = Annotated[
    str | None, typer.Option("--display-name", help="What the sign-in page calls it (default: its name).")
]
ClientIdOption = Annotated[str, typer.Option("--client-id", help="The client (application) id registered at the IdP.")]
SecretStdinOption = Annotated[
    bool,
    typer.Option("--client-secret-stdin", help="Read the client secret from standard input (none: a public client)."),
]


@dataclass(frozen=True)
class _Secret:
    """A secret the provider's configuration refers to: the model field, the option that reads it, its kind."""

    field: str
    option: str
    kind: CredentialKind


# -- add ------------------------------------------------------------------------------------------------------------


def _add(
    settings: Settings,
    tenant: str | None,
    name: str,
    model: type[ProviderBase],
    given: dict[str, Any],
    options: Mapping[str, str],
    secret: _Secret | None,
) -> None:
    """Validates the provider, reads its secret from standard input, stores the secret in the vault and the provider
    in the tenant's configuration, refusing a taken name or a domain another provider captures."""
    if not _NAME.match(name):
        fail(f"--name: {name!r} is not a provider name (1-63 of lower-case letters, digits and '-')", code=2)
    if secret is not None:
        given[secret.field] = f"{SECRET_SOURCE}/{name}"
    provider = _validated(model, given, options)
    written = {key: value for key, value in provider.model_dump(mode="json").items() if key in given}
    value = _secret_value(secret.option) if secret is not None else None

    async def add() -> str:
        async with opened_vault(settings, tenant) as opened:
            await _refuse_taken(opened, settings, name, provider)

            async def store_secret() -> None:
                if secret is not None and value is not None:
                    ref = SecretRef(opened.tenant, SECRET_SOURCE, name)
                    spec = CredentialSpec(secret.kind, (SSO_BINDING,), None, None, None, None)
                    await store_credential(opened, settings, ref, value, spec, via="sso add")

            def change(stored: dict[str, Any]) -> dict[str, Any]:
                return {**stored, "providers": {**(stored.get("providers") or {}), name: written}}

            await update_stored_config(
                opened.database,
                settings,
                opened.tenant,
                what=f"provider {name!r}",
                section=SECTION,
                change=change,
                before_write=store_secret,
            )
            return opened.tenant

    with vault_errors():
        tenant_id = run(add())
    domains = ", ".join(provider.domains) or "no domain (add one with --domain to offer it)"
    console.print(
        f"Added {given['kind']} provider {name!r} to tenant {tenant_id!r}; it captures {domains}.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if secret is not None:
        console.print(f"Its secret is in the vault as {SECRET_SOURCE}/{name}.", markup=False, highlight=False)
    warn_if_file_overrides(settings, tenant_id, SECTION)


def _validated(model: type[ProviderBase], given: dict[str, Any], options: Mapping[str, str]) -> ProviderBase:
    """The provider as its model validates it; the first problem is reported with the option at fault."""
    try:
        return model.model_validate(given)
    except ValidationError as problem:
        first = problem.errors(include_url=False)[0]
        message = first_problem(problem)
        if first["loc"]:
            field = str(first["loc"][0])
            fail(f"{options.get(field, field)}: {message}", code=2)
        # A rule across fields names them in its message: the person typed options.
        for field, option in options.items():
            message = re.sub(rf"\b{field}\b", option, message)
        fail(message, code=2)


def _secret_value(option: str) -> bytes:
    what = option.removeprefix("--").removesuffix("-stdin").replace("-", " ")
    value = read_secret_from_stdin(what).removesuffix("\r")  # a CRLF line end, as `echo` on Windows writes
    if not value:
        fail(f"{option}: standard input was empty; nothing was stored", code=2)
    return value.encode()


async def _refuse_taken(opened: OpenedVault, settings: Settings, name: str, provider: ProviderBase) -> None:
    current = (await load_effective_config(opened.database, settings, opened.tenant)).sso.providers
    if name in current:
        fail(f"--name: tenant {opened.tenant!r} already has a provider {name!r} (remove it first, or give --name)")
    for domain in provider.domains:
        for owner, other in current.items():
            if domain in other.domains:
                fail(
                    f"--domain {domain}: already captured by provider {owner!r}, so {name!r} cannot capture it "
                    "(a domain signs in through one provider; remove it there first)",
                    code=2,
                )


_PRESET_NAMES = {
    "okta": "Okta",
    "entra": "Microsoft Entra ID",
    "google": "Google Workspace",
    "auth0": "Auth0",
    "ping": "Ping Identity",
    "onelogin": "OneLogin",
    "generic": "any other OpenID Provider",
}


def _default_name(preset: str) -> str:
    return "oidc" if preset == "generic" else preset


def _oidc_command(preset: str) -> Callable[..., None]:
    """`sso add PRESET`: an OIDC provider with the preset's quirks (sso/oidc/presets.py)."""

    def add_oidc(
        client_id: ClientIdOption,
        issuer: Annotated[
            str | None,
            typer.Option("--issuer", help="The issuer URL (https; entra: built from --entra-tenant when left out)."),
        ] = None,
        entra_tenant: Annotated[
            str | None, typer.Option("--entra-tenant", help="entra: the directory (tenant) id or a verified domain.")
        ] = None,
        hosted_domain: Annotated[
            list[str] | None,
            typer.Option("--hosted-domain", help="google: a Workspace domain allowed (default: the --domain values)."),
        ] = None,
        client_secret_stdin: SecretStdinOption = False,
        domain: DomainOption = None,
        name: NameOption = None,
        display_name: DisplayNameOption = None,
        tenant: Tenant = None,
        data_dir: DataDir = None,
        config: ConfigFile = None,
    ) -> None:
        settings = settings_from(data_dir, config)
        if issuer is None and not (preset == "entra" and entra_tenant is not None):
            fail("--entra-tenant (or --issuer) is required" if preset == "entra" else "--issuer is required", code=2)
        given: dict[str, Any] = {"kind": "oidc", "preset": preset, "client_id": client_id}
        optional = {
            "issuer": issuer,
            "entra_tenant": entra_tenant,
            "domains": domain,
            "display_name": display_name,
            "hosted_domains": hosted_domain or (domain if preset == "google" else None),
        }
        given.update({key: value for key, value in optional.items() if value is not None})
        options = {
            "issuer": "--issuer",
            "client_id": "--client-id",
            "entra_tenant": "--entra-tenant",
            "domains": "--domain",
            "display_name": "--display-name",
            "hosted_domains": "--hosted-domain",
        }
        secret = _Secret("client_secret", "--client-secret-stdin", CredentialKind.CLIENT_SECRET)
        _add(
            settings,
            tenant,
            name or _default_name(preset),
            OidcProviderConfig,
            given,
            options,
            secret if client_secret_stdin else None,
        )

    add_oidc.__doc__ = f"Add {_PRESET_NAMES[preset]} (OpenID Connect)."
    return add_oidc


for _preset in ("okta", "entra", "google", "auth0", "ping", "onelogin"):
    add_app.command(_preset)(_oidc_command(_preset))
add_app.command("oidc")(_oidc_command("generic"))


@add_app.command("saml")
def add_saml(
    metadata: Annotated[str, typer.Option("--metadata", metavar="FILE|URL", help="The IdP's SAML metadata.")],
    entity_id: Annotated[
        str | None, typer.Option("--entity-id", help="The IdP to take from metadata that describes several.")
    ] = None,
    domain: DomainOption = None,
    name: Annotated[str, typer.Option("--name", help="The provider's name.")] = "saml",
    display_name: DisplayNameOption = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Add a SAML 2.0 identity provider from its metadata (a file or an https URL)."""
    settings = settings_from(data_dir, config)
    given: dict[str, Any] = {"kind": "saml", **_idp_metadata(metadata, entity_id)}
    optional = {"domains": domain, "display_name": display_name}
    given.update({key: value for key, value in optional.items() if value is not None})
    options = {"domains": "--domain", "display_name": "--display-name"}
    _add(settings, tenant, name, SamlProviderConfig, given, options, None)


def _idp_metadata(metadata: str, entity_id: str | None) -> dict[str, Any]:
    """The provider fields read from IdP metadata (a file, or an https URL); errors name --metadata."""
    try:
        if metadata.startswith(("https://", "http://")):
            xml = asyncio.run(fetch_idp_metadata(metadata))
        else:
            xml = Path(metadata).read_text(encoding="utf-8")
        return parse_idp_metadata(xml, entity_id=entity_id)
    except OSError as problem:
        fail(f"--metadata {metadata}: cannot read it ({problem.strerror or problem})", code=2)
    except UnicodeDecodeError:
        fail(f"--metadata {metadata}: not UTF-8 text", code=2)
    except MetadataError as problem:
        fail(f"--metadata {metadata}: {problem}", code=2)


@add_app.command("ldap")
def add_ldap(
    url: Annotated[str, typer.Option("--url", help="ldaps://host[:port], or ldap://host[:port] with --start-tls.")],
    bind_dn: Annotated[str, typer.Option("--bind-dn", help="The service account's DN.")],
    user_base: Annotated[str, typer.Option("--user-base", help="Where people are searched.")],
    group_base: Annotated[str, typer.Option("--group-base", help="Where groups are searched.")],
    bind_password_stdin: Annotated[
        bool, typer.Option("--bind-password-stdin", help="Read the service account's password from standard input.")
    ] = False,
    start_tls: Annotated[bool, typer.Option("--start-tls", help="StartTLS on an ldap:// URL.")] = False,
    active_directory: Annotated[bool, typer.Option("--active-directory", help="The directory is AD.")] = False,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="PEM certificates to trust for it instead of the system's.")
    ] = None,
    domain: DomainOption = None,
    name: Annotated[str, typer.Option("--name", help="The provider's name.")] = "ldap",
    display_name: DisplayNameOption = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Add an LDAP directory or Active Directory (sign-in with username and password)."""
    settings = settings_from(data_dir, config)
    if not bind_password_stdin:
        fail("--bind-password-stdin is required: the service account's password is read from standard input", code=2)
    given: dict[str, Any] = {
        "kind": "ldap",
        "url": url,
        "bind_dn": bind_dn,
        "user_base": user_base,
        "group_base": group_base,
    }
    optional = {
        "start_tls": start_tls or None,
        "active_directory": active_directory or None,
        "ca_file": str(ca_file) if ca_file else None,
        "domains": domain,
        "display_name": display_name,
    }
    given.update({key: value for key, value in optional.items() if value is not None})
    options = {
        "url": "--url",
        "bind_dn": "--bind-dn",
        "user_base": "--user-base",
        "group_base": "--group-base",
        "ca_file": "--ca-file",
        "domains": "--domain",
        "display_name": "--display-name",
    }
    secret = _Secret("bind_password", "--bind-password-stdin", CredentialKind.PASSWORD)
    _add(settings, tenant, name, LdapProviderConfig, given, options, secret)


# -- list / show ----------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _providers(settings: Settings, tenant: str | None) -> AsyncIterator[tuple[OpenedVault, dict[str, Any]]]:
    async with opened_vault(settings, tenant) as opened:
        try:
            config = await load_effective_config(opened.database, settings, opened.tenant)
        except ValidationError as problem:
            fail(f"the configuration of tenant {opened.tenant!r} is invalid: {first_problem(problem)}")
        yield opened, dict(config.sso.providers)


def _provider(providers: Mapping[str, ProviderConfig], name: str, tenant: str) -> ProviderConfig:
    if name not in providers:
        fail(f"no provider {name!r} in tenant {tenant!r} (see `chamberlain sso list`)")
    return providers[name]


def _where(provider: ProviderConfig) -> str:
    if isinstance(provider, OidcProviderConfig):
        return provider.issuer
    if isinstance(provider, SamlProviderConfig):
        return provider.idp_entity_id
    return provider.url


@app.command("list")
def list_providers(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List the identity providers in force: name, kind, preset, issuer or entity id, domains (never secrets)."""
    settings = settings_from(data_dir, config)

    async def fetch() -> dict[str, Any]:
        async with _providers(settings, tenant) as (_, providers):
            return providers

    with vault_errors():
        providers = run(fetch())
    table = Table("Name", "Kind", "Preset", "Issuer / entity ID / URL", "Domains")
    for name, provider in sorted(providers.items()):
        preset = provider.preset if isinstance(provider, OidcProviderConfig) else "-"
        table.add_row(name, provider.kind, preset, _where(provider), ", ".join(provider.domains) or "-")
    console.print(table)


@app.command("show")
def show(name: NameArgument, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print a provider's configuration in force as JSON (secrets appear only as vault references)."""
    settings = settings_from(data_dir, config)

    async def fetch() -> ProviderConfig:
        async with _providers(settings, tenant) as (opened, providers):
            return _provider(providers, name, opened.tenant)

    with vault_errors():
        provider = run(fetch())
    typer.echo(json.dumps(provider.model_dump(mode="json"), indent=2))


# -- remove ---------------------------------------------------------------------------------------------------------


@app.command("remove")
def remove(name: NameArgument, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Remove a provider: its configuration, the links from its people to their accounts, and its vault secret."""
    settings = settings_from(data_dir, config)

    async def delete() -> tuple[str, int, list[str]]:
        async with opened_vault(settings, tenant) as opened:
            row_config = await _stored_providers(opened)
            if name not in row_config:
                fail(
                    f"no stored provider {name!r} in tenant {opened.tenant!r} (one set in the configuration file "
                    "is removed there)"
                )
            references = [value for key, value in row_config[name].items() if key in _SECRET_FIELDS and value]

            def change(stored: dict[str, Any]) -> dict[str, Any]:
                kept = {key: value for key, value in (stored.get("providers") or {}).items() if key != name}
                return {**stored, "providers": kept}

            await update_stored_config(
                opened.database, settings, opened.tenant, what=f"provider {name!r}", section=SECTION, change=change
            )
            links = await FederatedIdentityRepository(opened.database, opened.tenant).unlink_provider(name)
            removed = [reference for reference in references if await _remove_secret(opened, settings, reference)]
            return opened.tenant, links, removed

    with vault_errors():
        tenant_id, links, removed = run(delete())
    console.print(
        f"Removed provider {name!r} from tenant {tenant_id!r}; forgot {links} federated link"
        f"{'s' if links != 1 else ''}; removed secrets: {', '.join(removed) or 'none'}.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


_SECRET_FIELDS = ("client_secret", "bind_password")


async def _stored_providers(opened: OpenedVault) -> dict[str, dict[str, Any]]:
    row = await TenantRepository(opened.database).get(opened.tenant)
    providers = ((row.config if row else None) or {}).get(SECTION, {}).get("providers") or {}
    return dict(providers)


async def _remove_secret(opened: OpenedVault, settings: Settings, reference: str) -> bool:
    """Removes a secret this command stored (source "sso"); a reference elsewhere may be shared, so it stays."""
    source, secret_name = split_vault_reference(reference)
    if source != SECRET_SOURCE:
        return False
    ref = SecretRef(opened.tenant, source, secret_name)
    existing = await opened.vault.record(ref)
    if existing is None:
        return False
    await record_admin_change(
        opened.database,
        settings,
        target=f"credential:{ref}",
        before=recordable(existing),
        after={},
        tenant=opened.tenant,
    )
    return await opened.vault.remove(ref)


# -- group mappings -------------------------------------------------------------------------------------------------

GroupArgument = Annotated[str, typer.Argument(help="The IdP or directory group (claim value, attribute value, DN).")]


@app.command("map")
def map_group(
    group: GroupArgument,
    role: Annotated[list[str], typer.Argument(help="The roles its members receive (replacing earlier ones).")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Give the members of GROUP these roles at their next sign-in (every role must be defined by the tenant)."""
    settings = settings_from(data_dir, config)
    roles = tuple(sorted(set(role)))

    async def store() -> str:
        async with opened_vault(settings, tenant) as opened:
            document = (await load_effective_config(opened.database, settings, opened.tenant)).roles or DEFAULT_ROLES
            # A role the document does not define grants nothing: almost certainly a typo (as the admin API says).
            undefined = [name for name in roles if name not in document.enterprise_roles]
            if undefined:
                fail(f"ROLE: tenant {opened.tenant!r} defines no role {', '.join(map(repr, undefined))}", code=2)
            mappings = GroupMappingRepository(opened.database, opened.tenant)
            existing = await mappings.get(group)
            await record_admin_change(
                opened.database,
                settings,
                target=f"group:{group}",
                before={"roles": list(existing.roles) if existing else []},
                after={"roles": list(roles)},
                tenant=opened.tenant,
            )
            await mappings.set_roles(group, roles)
            return opened.tenant

    with vault_errors():
        tenant_id = run(store())
    console.print(
        f"Members of {group!r} in tenant {tenant_id!r} receive: {', '.join(roles)}.", markup=False, highlight=False
    )


@app.command("unmap")
def unmap_group(
    group: GroupArgument, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Remove GROUP's role mappings."""
    settings = settings_from(data_dir, config)

    async def delete() -> None:
        async with opened_vault(settings, tenant) as opened:
            mappings = GroupMappingRepository(opened.database, opened.tenant)
            existing = await mappings.get(group)
            if existing is None:
                fail(f"no mappings for group {group!r} in tenant {opened.tenant!r}")
            await record_admin_change(
                opened.database,
                settings,
                target=f"group:{group}",
                before={"roles": list(existing.roles)},
                after={},
                tenant=opened.tenant,
            )
            await mappings.remove(group)

    with vault_errors():
        run(delete())
    console.print(f"Removed the mappings of {group!r}.", markup=False, highlight=False)


@app.command("mappings")
def list_mappings(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List group to role mappings."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[GroupMapping]:
        async with opened_vault(settings, tenant) as opened:
            return await GroupMappingRepository(opened.database, opened.tenant).list()

    with vault_errors():
        found = run(fetch())
    table = Table("Group", "Roles")
    for mapping in found:
        table.add_row(mapping.group, ", ".join(mapping.roles))
    console.print(table)


# -- test -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str


@app.command("test")
def check_provider(
    name: NameArgument, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Check a provider from here: OIDC discovery and JWKS, SAML certificates' expiry, LDAP bind and search.

    Exit code 1 when a check fails."""
    settings = settings_from(data_dir, config)

    async def check() -> list[Check]:
        async with _providers(settings, tenant) as (opened, providers):
            provider = _provider(providers, name, opened.tenant)
            if isinstance(provider, OidcProviderConfig):
                return await _check_oidc(opened, provider)
            if isinstance(provider, SamlProviderConfig):
                return _check_saml(provider)
            return await _check_ldap(opened, provider)

    with vault_errors():
        checks = run(check())
    for item in checks:
        mark = "[bold green]OK[/]  " if item.ok else "[bold red]FAIL[/]"
        console.print(f"{mark} {item.what}: ", end="", highlight=False)
        console.print(item.detail, markup=False, highlight=False, soft_wrap=True)
    if not all(item.ok for item in checks):
        raise typer.Exit(1)


async def _secret_check(opened: OpenedVault, reference: str | None, what: str) -> Check:
    """Whether the referenced secret is in the vault and usable by "sso" (its value is not read)."""
    if reference is None:
        return Check(what, True, "none (a public client)")
    source, secret_name = split_vault_reference(reference)
    record = await opened.vault.record(SecretRef(opened.tenant, source, secret_name))
    if record is None:
        return Check(what, False, f"no secret {reference} in the vault")
    if SSO_BINDING not in record.bindings:
        return Check(what, False, f"{reference} is not bound to {SSO_BINDING!r} (vault set --bind {SSO_BINDING})")
    return Check(what, True, f"{reference} in the vault")


async def _check_oidc(opened: OpenedVault, provider: OidcProviderConfig) -> list[Check]:
    checks = [await _secret_check(opened, provider.client_secret, "client secret")]
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
        keys = IssuerKeys(http)
        try:
            metadata = await keys.metadata(provider.issuer)
        except IdentityProviderUnavailable as problem:
            return [*checks, Check("discovery", False, f"{provider.issuer}: {problem.message}")]
        checks.append(
            Check("discovery", True, f"{provider.issuer} (authorization at {metadata.authorization_endpoint})")
        )
        try:
            document = await keys.get_json(metadata.jwks_uri, what="JWKS")
        except IdentityProviderUnavailable as problem:
            return [*checks, Check("JWKS", False, f"{metadata.jwks_uri}: {problem.message}")]
    signing = [key for key in document.get("keys") or [] if isinstance(key, dict) and key.get("use", "sig") == "sig"]
    checks.append(Check("JWKS", bool(signing), f"{metadata.jwks_uri}: {len(signing)} signing key(s)"))
    return checks


def _check_saml(provider: SamlProviderConfig) -> list[Check]:
    checks = []
    now = datetime.now(UTC)
    for number, text in enumerate(provider.certificates, start=1):
        what = f"certificate {number}"
        try:
            certificate = (
                x509.load_pem_x509_certificate(text.encode())
                if "BEGIN CERTIFICATE" in text
                else x509.load_der_x509_certificate(_base64(text))
            )
        except ValueError:
            checks.append(Check(what, False, "not a PEM or base64 DER certificate"))
            continue
        expires = certificate.not_valid_after_utc
        days = (expires - now).days
        subject = certificate.subject.rfc4514_string()
        detail = f"{subject}, expires {expires:%Y-%m-%d}"
        if expires <= now:
            checks.append(Check(what, False, f"{subject}, expired on {expires:%Y-%m-%d}"))
        else:
            soon = f" (in {days} days: replace it soon)" if days < EXPIRY_WARNING_DAYS else f" (in {days} days)"
            checks.append(Check(what, True, detail + soon))
    return checks


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


async def _check_ldap(opened: OpenedVault, provider: LdapProviderConfig) -> list[Check]:
    secret = await _secret_check(opened, provider.bind_password, "bind password")
    if not secret.ok:
        return [secret]
    source, secret_name = split_vault_reference(provider.bind_password)
    password = await opened.vault.read_as_admin(
        SecretRef(opened.tenant, source, secret_name),
        actor=Actor("user", f"os:{getpass.getuser()}"),
        purpose="sso test: service bind",
    )
    return [secret, *await asyncio.to_thread(_ldap_checks, provider, password.decode())]


def _ldap_checks(provider: LdapProviderConfig, password: str) -> list[Check]:
    try:
        connection = Endpoint(provider).open(provider.bind_dn, password)
    except (LDAPException, OSError) as problem:
        return [Check("connect", False, f"{provider.url}: {_ldap_problem(problem)}")]
    try:
        if not connection.bind():
            return [
                Check("connect", True, provider.url),
                Check("service bind", False, f"{provider.bind_dn}: {connection.result.get('description')}"),
            ]
        checks = [Check("connect", True, provider.url), Check("service bind", True, provider.bind_dn)]
        for what, base in (("user base", provider.user_base), ("group base", provider.group_base)):
            connection.search(base, "(objectClass=*)", search_scope=BASE, attributes=[])
            found = connection.result.get("result") == 0
            checks.append(Check(what, found, base if found else f"{base}: {connection.result.get('description')}"))
        return checks
    except (LDAPException, OSError) as problem:
        return [Check("service bind", False, f"{provider.url}: {_ldap_problem(problem)}")]
    finally:
        discard(connection)


def _ldap_problem(problem: Exception) -> str:
    return type(problem).__name__ if not str(problem) else f"{type(problem).__name__}: {problem}"
