"""The protocol objects of each tenant's identity providers, built once and rebuilt when a provider's configuration
changes (a new secret reference, a new certificate), so JWKS caches, pooled directory connections and SAML settings
survive between sign-ins."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from chamberlain.gateway.server_config import split_vault_reference
from chamberlain.sso.config import ProviderConfig
from chamberlain.sso.identity import IdentityProviderUnavailable
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.ldap.directory import Directory
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.oidc.keys import IssuerKeys
from chamberlain.sso.oidc.relying_party import OidcRelyingParty
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.sso.saml.service_provider import SamlServiceProvider
from chamberlain.sso.saml.sp_credentials import sp_credentials
from chamberlain.store.directory_cache import DirectoryCache
from chamberlain.store.servers import SSO_BINDING
from chamberlain.tenancy.tenant import Tenant
from chamberlain.vault.backend import SecretRef, VaultError

Built = TypeVar("Built")


def callback_url(app: Tenant, name: str) -> str:
    """The OIDC redirect URI registered at the IdP (OAuth 2.0 §3.1.2): the same in the request and the exchange."""
    return f"{app.issuer}/sso/{name}/callback"


def acs_url(app: Tenant, name: str) -> str:
    """The SAML AssertionConsumerService (HTTP-POST binding)."""
    return f"{app.issuer}/sso/{name}/acs"


def sp_entity_id(app: Tenant, name: str) -> str:
    """The SAML SP's entity ID: the URL its metadata is served at (SAML Metadata §4.1, well-known location)."""
    return f"{app.issuer}/sso/{name}/metadata"


class ProviderRegistry:
    def __init__(self, keys: IssuerKeys) -> None:
        self.keys = keys
        self._built: dict[tuple[str, str], tuple[ProviderConfig, object]] = {}
        self._closing: set[asyncio.Future[None]] = set()  # replaced directories' pools, unbinding on a worker thread

    def relying_party(self, app: Tenant, name: str, config: OidcProviderConfig) -> OidcRelyingParty:
        return self._cached(app, name, config, OidcRelyingParty) or self._keep(
            app, name, config, OidcRelyingParty(name, config, self.keys)
        )

    async def service_provider(self, app: Tenant, name: str, config: SamlProviderConfig) -> SamlServiceProvider:
        found = self._cached(app, name, config, SamlServiceProvider)
        if found is not None:
            return found
        credentials = await sp_credentials(app)
        built = SamlServiceProvider(
            name, config, entity_id=sp_entity_id(app, name), acs_url=acs_url(app, name), credentials=credentials
        )
        return self._keep(app, name, config, built)

    def directory(self, app: Tenant, name: str, config: LdapProviderConfig) -> Directory:
        return self._cached(app, name, config, Directory) or self._keep(
            app, name, config, Directory(name, config, DirectoryCache(app.database, app.id))
        )

    async def aclose(self) -> None:
        """Closes the directories' pooled connections (at shutdown), off the event loop: unbinding blocks."""
        directories = [built for _, built in self._built.values() if isinstance(built, Directory)]
        self._built.clear()
        for directory in directories:
            await asyncio.to_thread(directory.close)
        await asyncio.gather(*self._closing)

    def _cached(self, app: Tenant, name: str, config: ProviderConfig, kind: type[Built]) -> Built | None:
        found = self._built.get((app.id, name))
        if found is None or found[0] != config or not isinstance(found[1], kind):
            return None
        return found[1]

    def _keep(self, app: Tenant, name: str, config: ProviderConfig, built: Built) -> Built:
        replaced = self._built.get((app.id, name))
        if replaced is not None and isinstance(replaced[1], Directory):
            # A changed directory configuration: the old pool's connections are not reused. Unbinding blocks, so
            # it happens on a worker thread rather than on the sign-in that noticed the change.
            closing = asyncio.get_running_loop().run_in_executor(None, replaced[1].close)
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._built[(app.id, name)] = (config, built)
        return built


async def provider_secret(app: Tenant, reference: str, *, purpose: str) -> str:
    """A provider's secret (client secret, bind password) from the tenant's vault, bound to "sso"; the read is
    audited by the vault. A missing or refused secret is the provider being unusable, never a 500."""
    source, name = split_vault_reference(reference)
    try:
        value = await app.vault.use(app.id, SSO_BINDING, None, None, SecretRef(app.id, source, name), purpose=purpose)
    except VaultError:
        raise IdentityProviderUnavailable(
            "provider_secret",
            "Single sign-on is misconfigured here (its secret cannot be read); tell an administrator.",
        ) from None
    return value.decode()
