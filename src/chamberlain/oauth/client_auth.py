"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3, RFC 7523 §2.2,
RFC 8705 §2).

A client authenticates with exactly the method it registered; presenting any other, or two at once, fails. The mTLS
methods use the client certificate the TLS layer verified (transport/tls.py) and no other credential: the request
carries only client_id (RFC 8705 §2).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import time
from collections.abc import Mapping
from urllib.parse import unquote_plus

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from joserfc.jws import extract_compact

from chamberlain.crypto.tokens import digest_matches
from chamberlain.oauth.client_keys import ClientKeySets
from chamberlain.oauth.client_metadata import MTLS_AUTH_METHODS
from chamberlain.oauth.clients import Client, ClientDirectory
from chamberlain.oauth.errors import INVALID_REQUEST, OAuthError, invalid_client

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
# Asymmetric algorithms only: a shared-secret or unsigned assertion would prove nothing about the key holder.
ASSERTION_ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "Ed25519", "EdDSA"]
MAX_ASSERTION_LIFETIME = 600


class AssertionReplayCache:
    """jti values of assertions already accepted, until they expire (RFC 7523 §3 item 7)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def first_use(self, client_id: str, jti: str, expires_at: float) -> bool:
        now = time.time()
        if len(self._seen) > 10_000:
            self._seen = {key: exp for key, exp in self._seen.items() if exp > now}
        key = f"{client_id}\x00{jti}"
        if self._seen.get(key, 0) > now:
            return False
        self._seen[key] = expires_at
        return True


class ClientAuthenticator:
    def __init__(self, directory: ClientDirectory, key_sets: ClientKeySets, *, audiences: tuple[str, ...]) -> None:
        self._directory = directory
        self._key_sets = key_sets
        self._audiences = audiences
        self._replays = AssertionReplayCache()

    async def authenticate(
        self, form: Mapping[str, str], authorization: str | None, certificate: bytes | None = None
    ) -> Client:
        """`certificate`: the verified TLS client certificate of the request (DER), if any."""
        method, client_id, credential = _presented_credentials(form, authorization)
        basic = method == "client_secret_basic"
        try:
            client = await self._directory.find(client_id)
        except OAuthError as failure:  # a metadata document that cannot be fetched or used
            raise invalid_client(failure.description or "the client's metadata could not be used") from None
        if client is None:
            raise invalid_client("unknown or revoked client", basic_auth_attempted=basic)
        registered = client.metadata.token_endpoint_auth_method
        if method == "none" and registered in MTLS_AUTH_METHODS and credential is None:
            await self._check_certificate(client, certificate)
            return client
        if method != registered:
            raise invalid_client(f"this client must authenticate with {registered}", basic_auth_attempted=basic)
        if method in ("client_secret_basic", "client_secret_post"):
            if client.secret_hash is None or not digest_matches(credential or "", client.secret_hash):
                raise invalid_client("client authentication failed", basic_auth_attempted=basic)
        elif method == "private_key_jwt":
            await self._check_assertion(client, credential or "")
        return client

    async def _check_certificate(self, client: Client, der: bytes | None) -> None:
        if der is None:
            raise invalid_client("this client authenticates with a TLS client certificate, and none was presented")
        certificate = x509.load_der_x509_certificate(der)
        if client.metadata.token_endpoint_auth_method == "tls_client_auth":
            # RFC 8705 §2.1: the chain was validated by the TLS layer; the certificate must be the registered one.
            name = client.metadata.tls_client_auth_name
            if name is None or not certificate_matches(certificate, *name):
                raise invalid_client("the TLS client certificate is not the one registered for this client")
            return
        # RFC 8705 §2.2: the certificate (or its key) must be one the client registered in jwks or jwks_uri.
        key_set = await self._key_sets.for_client(client.metadata)
        if not certificate_in_key_set(certificate, der, key_set):
            raise invalid_client("the TLS client certificate is not in this client's registered keys")

    async def _check_assertion(self, client: Client, assertion: str) -> None:
        """RFC 7523 §3: iss and sub are the client_id, aud names this server, exp bounds it, jti is single use."""
        key_set = await self._key_sets.for_client(client.metadata)
        try:
            decoded = jwt.decode(assertion, key_set, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError, TypeError):
            raise invalid_client("the client assertion's signature is invalid") from None
        claims = decoded.claims
        now = time.time()
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        exp, jti = claims.get("exp"), claims.get("jti")
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise invalid_client("the client assertion's iss and sub must both be the client_id")
        if not any(value in self._audiences for value in audiences):
            raise invalid_client("the client assertion's aud must be this server's issuer or token endpoint")
        if not isinstance(exp, int) or exp <= now or exp > now + MAX_ASSERTION_LIFETIME:
            raise invalid_client("the client assertion is expired or lives too long")
        if not isinstance(jti, str) or not self._replays.first_use(client.client_id, jti, exp):
            raise invalid_client("the client assertion has no jti or was used before")


def _presented_credentials(form: Mapping[str, str], authorization: str | None) -> tuple[str, str, str | None]:
    """(method, client_id, secret or assertion). RFC 6749 §2.3: a client must not use more than one method."""
    methods = []
    if authorization and authorization[:6].lower() == "basic ":
        methods.append("client_secret_basic")
    if "client_secret" in form:
        methods.append("client_secret_post")
    if "client_assertion" in form or "client_assertion_type" in form:
        methods.append("private_key_jwt")
    if len(methods) > 1:
        raise OAuthError(INVALID_REQUEST, "use exactly one client authentication method (RFC 6749 §2.3)")
    method = methods[0] if methods else "none"
    if method == "client_secret_basic":
        client_id, secret = _parse_basic(authorization or "")
        if form.get("client_id", client_id) != client_id:
            raise OAuthError(INVALID_REQUEST, "client_id in the body differs from the authenticated client")
        return method, client_id, secret
    if method == "private_key_jwt":
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION or not form.get("client_assertion"):
            raise OAuthError(INVALID_REQUEST, f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
        client_id = form.get("client_id") or _assertion_subject(form["client_assertion"])
        return method, client_id, form["client_assertion"]
    public_id = form.get("client_id")
    if not public_id:
        raise invalid_client("client_id is required")
    return method, public_id, form.get("client_secret")


def _parse_basic(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined with ':' and base64-encoded."""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("malformed Basic credentials", basic_auth_attempted=True) from None
    client_id, separator, secret = decoded.partition(":")
    if not separator or not client_id:
        raise invalid_client("malformed Basic credentials", basic_auth_attempted=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _assertion_subject(assertion: str) -> str:
    """The unverified `sub` only names whose keys to verify with; nothing in it is trusted before that check."""
    try:
        sub = json.loads(extract_compact(assertion.encode("ascii")).payload).get("sub")
    except (JoseError, ValueError, UnicodeError, AttributeError):
        sub = None
    if not isinstance(sub, str) or not sub:
        raise invalid_client("the client assertion names no client")
    return sub


def certificate_matches(certificate: x509.Certificate, name: str, expected: str) -> bool:
    """RFC 8705 §2.1.2: the subject DN, or one subject alternative name of the registered type, equals `expected`."""
    if name == "tls_client_auth_subject_dn":
        return certificate.subject.rfc4514_string() == expected  # canonical_dn() when registered
    try:
        alternatives = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if name == "tls_client_auth_san_ip":
        try:
            return ipaddress.ip_address(expected) in alternatives.get_values_for_type(x509.IPAddress)
        except ValueError:
            return False
    kinds: dict[str, type[x509.DNSName] | type[x509.UniformResourceIdentifier] | type[x509.RFC822Name]] = {
        "tls_client_auth_san_dns": x509.DNSName,
        "tls_client_auth_san_uri": x509.UniformResourceIdentifier,
        "tls_client_auth_san_email": x509.RFC822Name,
    }
    kind = kinds.get(name)
    return kind is not None and expected in alternatives.get_values_for_type(kind)


def certificate_in_key_set(certificate: x509.Certificate, der: bytes, key_set: KeySet) -> bool:
    """RFC 8705 §2.2.2: a key whose x5c starts with this certificate, or (without x5c) whose public key is its key."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    for key in key_set.keys:
        chain = key.get("x5c")
        if isinstance(chain, list) and chain:
            try:
                if base64.b64decode(chain[0], validate=True) == der:  # RFC 7517 §4.7: base64, not base64url
                    return True
            except (binascii.Error, TypeError):
                continue
        elif isinstance(key, RSAKey | ECKey | OKPKey):
            try:
                if key.as_der(private=False) == spki:
                    return True
            except (ValueError, TypeError):
                continue
    return False
