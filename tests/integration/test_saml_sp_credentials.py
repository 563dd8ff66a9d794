"""The tenant's SAML SP key pair: made once, kept in the vault, the same for every replica even when two race."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chamberlain.sso.saml.sp_credentials import SECRET_NAME, SECRET_SOURCE, generate_sp_credentials, sp_credentials
from chamberlain.store.servers import SSO_BINDING
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from tests.support.gateway import vault_of
from tests.support.server import RunningServer


async def test_replicas_agree_on_one_key_pair(server: RunningServer) -> None:
    async with vault_of(server) as vault:
        tenant = SimpleNamespace(id=server.settings.tenant, issuer="https://chamberlain.example.org", vault=vault)
        first, second = await asyncio.gather(sp_credentials(tenant), sp_credentials(tenant))  # type: ignore[arg-type]
        assert first == second
        # A replica that lost the race stored its own pair as a later version: it is never the one in use.
        ref = SecretRef(tenant.id, SECRET_SOURCE, SECRET_NAME)
        loser = generate_sp_credentials("racing replica")
        await vault.store(
            ref, (loser.private_key + loser.certificate).encode(), kind=CredentialKind.API_KEY, bindings=(SSO_BINDING,)
        )
        assert await sp_credentials(tenant) == first  # type: ignore[arg-type]
        record = await vault.record(ref)
        assert record is not None
        assert record.bindings == (SSO_BINDING,)
    key = serialization.load_pem_private_key(first.private_key.encode(), password=None)
    certificate = x509.load_pem_x509_certificate(first.certificate.encode())
    assert certificate.public_key() == key.public_key()
