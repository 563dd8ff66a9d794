"""Token signing keys: generation, encryption at rest, and the in-memory key ring used on every request.

The ring holds one active signing key and every key whose tokens may still be alive, so `chamberlain keys rotate`
never invalidates a token early: the old key keeps verifying until its tokens expire.

A new key is published before it signs: every replica loads the store's keys each second (state.py), so a token
signed with a key the moment it was created could reach a replica that does not know it yet and be refused. For
PUBLISH_BEFORE_SIGNING seconds after a rotation the key it replaced still signs, while the new one is already in
every ring and in /jwks.json (as Keycloak and Hydra publish a key ahead of its use).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from joserfc import jwt
from joserfc.jwk import ECKey, GuestProtocol, Key, OKPKey, import_key

from chamberlain.crypto.master_key import MasterKey

SigningAlgorithm = Literal["ES256", "EdDSA"]
PUBLISH_BEFORE_SIGNING = 2.0  # seconds: two of the replicas' refresh intervals

# RFC 9864 §2 deprecates the polymorphic "EdDSA" JWS name; the fully specified "Ed25519" says the same thing.
_JWS_ALGORITHM = {"ES256": "ES256", "EdDSA": "Ed25519"}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str  # the JWS "alg" value
    key: Key  # private for the active key; verification only needs its public half
    public_jwk: Mapping[str, Any]
    created_at: float
    retired_at: float | None = None
    expires_at: float | None = None


@dataclass(frozen=True)
class GeneratedKey:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    encrypted_private_key: bytes


def generate_signing_key(algorithm: SigningAlgorithm, master_key: MasterKey) -> GeneratedKey:
    alg = _JWS_ALGORITHM[algorithm]
    private: Key = ECKey.generate_key("P-256") if algorithm == "ES256" else OKPKey.generate_key("Ed25519")
    # RFC 7638 thumbprints make a kid that names the key material itself.
    kid = private.thumbprint()
    public_jwk = {**private.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    private_json = json.dumps(private.as_dict(private=True)).encode()
    return GeneratedKey(kid, alg, public_jwk, master_key.encrypt(private_json, kid.encode()))


def load_signing_key(
    *,
    kid: str,
    alg: str,
    public_jwk: Mapping[str, Any],
    encrypted_private_key: bytes,
    master_key: MasterKey,
    created_at: float,
    retired_at: float | None,
    expires_at: float | None,
) -> SigningKey:
    private = import_key(json.loads(master_key.decrypt(encrypted_private_key, kid.encode())))
    return SigningKey(kid, alg, private, dict(public_jwk), created_at, retired_at, expires_at)


class KeyRing:
    """An immutable snapshot; a rotation builds a new ring and swaps it in (no locks on the request path)."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        ordered = sorted(keys, key=lambda k: k.created_at)
        signers = [k for k in ordered if k.retired_at is None]
        if not signers:
            raise ValueError("no active signing key: run 'chamberlain keys rotate'")
        self._newest = signers[-1]
        replaced = [k for k in ordered if k.retired_at is not None]
        self._replaced = max(replaced, key=lambda k: k.retired_at or 0.0) if replaced else None
        self._newest_signs_from = self._newest.created_at + PUBLISH_BEFORE_SIGNING
        self._by_kid = {k.kid: k for k in ordered}
        self.algorithms = sorted({k.alg for k in ordered})
        self.version = tuple(sorted((k.kid, k.retired_at or 0.0) for k in ordered))  # what the store's rows say

    @property
    def active(self) -> SigningKey:
        """The key that signs now: the newest, once it has been published long enough (see the module)."""
        if self._replaced is not None and time.time() < self._newest_signs_from:
            return self._replaced
        return self._newest

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        signer = self.active
        header = {"alg": signer.alg, "typ": typ, "kid": signer.kid}
        return jwt.encode(header, dict(claims), signer.key, algorithms=[signer.alg])

    def key_for(self, kid: object) -> SigningKey | None:
        return self._by_kid.get(kid) if isinstance(kid, str) else None

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.public_jwk) for k in self._by_kid.values()]}

    def resolver(self, on_unknown: Callable[[], Exception]) -> Callable[[GuestProtocol], Key]:
        """A joserfc key callable: picks the key named by the token's `kid`, refusing unknown or mismatched ones."""

        def pick(guest: GuestProtocol) -> Key:
            headers = guest.headers()
            found = self.key_for(headers.get("kid"))
            if found is None or headers.get("alg") != found.alg:
                raise on_unknown()
            return found.key

        return pick
