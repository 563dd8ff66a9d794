"""The SAML service provider's own key pair: one RSA key and self-signed certificate per tenant, shared by all its
SAML providers and every replica. It signs our AuthnRequests and decrypts encrypted assertions; the IdP learns the
certificate from our metadata (SAML Metadata §2.4.1.1 <KeyDescriptor>), where a self-signed one is the norm
(the trust comes from the metadata exchange, not from a CA).

It is made on first use and kept in the tenant's vault (`sso/saml-service-provider`, bound to "sso"). Two replicas
that both find it missing both store one: versions are numbered in order, so the first version is the one in use and
every replica reads that one (a later racing version is never used). A new key pair: remove the secret
(`chamberlain vault rm sso/saml-service-provider`); the next sign-in makes one, and each IdP re-imports our metadata.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from chamberlain.store.servers import SSO_BINDING
from chamberlain.tenancy.tenant import Tenant
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.service import GATEWAY
from chamberlain.vault.settings import CredentialKind

SECRET_SOURCE = "sso"
SECRET_NAME = "saml-service-provider"
KEY_SIZE = 3072  # NIST SP 800-57 Part 1 Rev. 5 Table 2: 128-bit security strength, good beyond 2030
VALIDITY = datetime.timedelta(days=3650)  # SAML ignores certificate expiry in metadata trust; renewal is by removal


@dataclass(frozen=True)
class SpCredentials:
    private_key: str  # PEM, PKCS #8
    certificate: str  # PEM


def generate_sp_credentials(common_name: str) -> SpCredentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .sign(key, hashes.SHA256())
    )
    return SpCredentials(
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _encoded(credentials: SpCredentials) -> bytes:
    return (credentials.private_key + credentials.certificate).encode()


def _decoded(value: bytes) -> SpCredentials:
    text = value.decode()
    marker = "-----BEGIN CERTIFICATE-----"
    split = text.index(marker)
    return SpCredentials(private_key=text[:split], certificate=text[split:])


async def sp_credentials(app: Tenant) -> SpCredentials:
    """The tenant's SAML SP key pair, made and stored the first time (see the module's docstring for races)."""
    ref = SecretRef(app.id, SECRET_SOURCE, SECRET_NAME)
    versions = await app.vault.backend.versions(ref)
    if not versions:
        # RSA key generation takes a moment: off the event loop.
        made = await asyncio.to_thread(generate_sp_credentials, f"Chamberlain SAML SP {app.issuer}")
        await app.vault.store(
            ref,
            _encoded(made),
            kind=CredentialKind.API_KEY,
            bindings=(SSO_BINDING,),
            max_age=VALIDITY.total_seconds(),
        )
        versions = await app.vault.backend.versions(ref)
    # The first version still kept: the one every replica that raced to create it agrees on.
    value = await app.vault.read_as_admin(
        ref, actor=GATEWAY, version=versions[0].version, purpose="SAML service provider key", via="gateway"
    )
    return _decoded(value)
