"""AccessTokenIssuer / AccessTokenVerifier / KeyRing with in-memory keys: every forged, stale or mangled token is
refused, and refused only ever with InvalidAccessToken (never another exception a caller would not expect)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.signing_keys import (
    PUBLISH_BEFORE_SIGNING,
    KeyRing,
    SigningAlgorithm,
    SigningKey,
    generate_signing_key,
    load_signing_key,
)
from chamberlain.oauth.access_tokens import (
    MAX_TOKEN_LENGTH,
    TOKEN_TYPE,
    AccessTokenIssuer,
    AccessTokenVerifier,
    InvalidAccessToken,
)
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.store.grants import Revocation, tenant_client_key

ISSUER = "https://gateway.example"
AUDIENCE = "https://gateway.example/mcp/demo"
MASTER_KEY = MasterKey(os.urandom(32))


def new_key(algorithm: SigningAlgorithm = "ES256", *, created_at: float | None = None) -> SigningKey:
    generated = generate_signing_key(algorithm, MASTER_KEY)
    return load_signing_key(
        kid=generated.kid,
        alg=generated.alg,
        public_jwk=generated.public_jwk,
        encrypted_private_key=generated.encrypted_private_key,
        master_key=MASTER_KEY,
        created_at=time.time() if created_at is None else created_at,
        retired_at=None,
        expires_at=None,
    )


def retired(key: SigningKey) -> SigningKey:
    return SigningKey(key.kid, key.alg, key.key, key.public_jwk, key.created_at, retired_at=time.time())


class Keys:
    """A swappable ring, as AppState swaps in a new snapshot when the store's keys change."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def __call__(self) -> KeyRing:
        return self.ring


def issue(keys: Keys, *, ttl: int = 600, grant_id: str | None = "grant-1", audience: str = AUDIENCE) -> str:
    issuer = AccessTokenIssuer(ISSUER, keys, ttl)
    return issuer.issue(
        subject="user-1",
        client_id="client-1",
        audience=audience,
        scopes=frozenset({"mcp:tools"}),
        tenant="default",
        grant_id=grant_id,
        auth_time=time.time(),
    ).token


def valid_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "client_id": "client-1",
        "scope": "mcp:tools",
        "iat": now,
        "exp": now + 600,
        "jti": "jti-1",
        "tenant": "default",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def refused(verifier: AccessTokenVerifier, token: str, *, audience: str | None = AUDIENCE) -> str:
    with pytest.raises(InvalidAccessToken) as refusal:
        verifier.verify(token, audience=audience)
    return refusal.value.reason


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return new_key()


@pytest.fixture
def keys(key: SigningKey) -> Keys:
    return Keys(KeyRing([key]))


@pytest.fixture
def revocations() -> RevocationList:
    return RevocationList()


@pytest.fixture
def verifier(keys: Keys, revocations: RevocationList) -> AccessTokenVerifier:
    return AccessTokenVerifier(ISSUER, keys, revocations)


# -- the positive control: what an acceptable token looks like ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_issued_token_verifies_with_its_claims(algorithm: SigningAlgorithm) -> None:
    keys = Keys(KeyRing([new_key(algorithm)]))
    verifier = AccessTokenVerifier(ISSUER, keys, RevocationList())
    token = issue(keys)
    claims = verifier.verify(token, audience=AUDIENCE)
    assert (claims.subject, claims.client_id, claims.audience) == ("user-1", "client-1", (AUDIENCE,))
    assert claims.scopes == {"mcp:tools"}
    assert claims.grant_id == "grant-1"
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": keys.ring.active.alg, "typ": TOKEN_TYPE, "kid": keys.ring.active.kid}
    # Verified twice (the second time from the cache): the same answer.
    assert verifier.verify(token, audience=None) == claims


# -- claims that make a correctly signed token unacceptable -------------------------------------------------------


def test_expired_token_is_refused_even_after_it_was_cached(keys: Keys, verifier: AccessTokenVerifier) -> None:
    assert "expired" in refused(verifier, issue(keys, ttl=-1))
    assert "expired" in refused(verifier, issue(keys, ttl=0))
    token = keys.ring.sign(valid_claims(exp=int(time.time()) + 1), typ=TOKEN_TYPE)
    verifier.verify(token, audience=AUDIENCE)  # cached while still valid
    time.sleep(1.1)
    assert "expired" in refused(verifier, token)


def test_token_for_another_audience_is_refused(keys: Keys, verifier: AccessTokenVerifier) -> None:
    token = issue(keys, audience="https://gateway.example/mcp/other")
    assert "resource" in refused(verifier, token)
    assert "resource" in refused(verifier, token, audience="https://gateway.example/mcp/demo/")


@pytest.mark.parametrize(
    ("kind", "value"),
    [("jti", "jti-1"), ("grant", "grant-1"), ("client", "default:client-1")],
    ids=["jti", "grant", "client"],
)
def test_revoked_token_is_refused_even_after_it_was_cached(
    keys: Keys, verifier: AccessTokenVerifier, revocations: RevocationList, kind: Any, value: str
) -> None:
    token = keys.ring.sign(valid_claims(grant_id="grant-1"), typ=TOKEN_TYPE)
    verifier.verify(token, audience=AUDIENCE)
    revocations.apply([Revocation(1, kind, value, time.time() + 600)])
    assert "revoked" in refused(verifier, token)


def test_revoking_a_client_in_one_tenant_leaves_the_same_client_id_in_another_alone(
    keys: Keys, verifier: AccessTokenVerifier, revocations: RevocationList
) -> None:
    token = keys.ring.sign(valid_claims(), typ=TOKEN_TYPE)  # client-1 of tenant "default"
    revocations.apply([Revocation(1, "client", tenant_client_key("acme", "client-1"), time.time() + 600)])
    verifier.verify(token, audience=AUDIENCE)
    revocations.apply([Revocation(2, "client", tenant_client_key("default", "client-1"), time.time() + 600)])
    assert "revoked" in refused(verifier, token)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "issued by someone else"),
        ({"iss": ISSUER + "/"}, "issued by someone else"),
        ({"iss": None}, "issued by someone else"),
        ({"iat": int(time.time()) + 3600}, "future"),
        ({"sub": None}, "required claims"),
        ({"aud": None}, "required claims"),
        ({"aud": []}, "required claims"),
        ({"aud": 7}, "required claims"),
        ({"client_id": None}, "required claims"),
        ({"jti": None}, "required claims"),
        ({"exp": None}, "required claims"),
        ({"exp": "9999999999"}, "required claims"),
        ({"exp": True}, "required claims"),
        ({"exp": 9.9e9}, "required claims"),
        ({"iat": None}, "required claims"),
        ({"scope": ["mcp:tools"]}, "required claims"),
        ({"sub": 42}, "required claims"),
    ],
)
def test_signed_token_with_bad_claims_is_refused(
    keys: Keys, verifier: AccessTokenVerifier, changes: dict[str, Any], reason: str
) -> None:
    token = keys.ring.sign(valid_claims(**changes), typ=TOKEN_TYPE)
    assert reason in refused(verifier, token)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT+x", "id_token", "application/jwt", ""])
def test_signed_token_that_is_not_an_access_token_is_refused(
    keys: Keys, verifier: AccessTokenVerifier, typ: str
) -> None:
    token = keys.ring.sign(valid_claims(), typ=typ)
    assert "typ" in refused(verifier, token)


def test_signed_token_without_typ_is_refused(key: SigningKey, verifier: AccessTokenVerifier) -> None:
    token = jwt.encode(
        {"alg": key.alg, "kid": key.kid}, valid_claims(), key.key, algorithms=[key.alg], default_type=None
    )
    assert "typ" in refused(verifier, token)


# -- forged signatures and algorithm confusion -------------------------------------------------------------------


def test_alg_none_is_refused(key: SigningKey, verifier: AccessTokenVerifier) -> None:
    payload = segment(valid_claims())
    for header in (
        {"alg": "none", "typ": TOKEN_TYPE, "kid": key.kid},
        {"alg": "none", "typ": TOKEN_TYPE},
        {"alg": "None", "typ": TOKEN_TYPE, "kid": key.kid},
    ):
        for signature in ("", b64(b"x")):
            refused(verifier, f"{segment(header)}.{payload}.{signature}")


def test_hs256_keyed_with_the_public_key_is_refused(key: SigningKey, verifier: AccessTokenVerifier) -> None:
    """The classic RS/HS confusion: an HMAC whose secret is the verifier's public key material."""
    public = ECKey.import_key(dict(key.public_jwk)) if key.public_jwk["kty"] == "EC" else None
    assert public is not None
    secrets = [
        json.dumps(dict(key.public_jwk)).encode(),
        json.dumps(dict(key.public_jwk), separators=(",", ":"), sort_keys=True).encode(),
        public.as_pem(private=False),
        public.as_der(private=False),
    ]
    for secret in secrets:
        header = segment({"alg": "HS256", "typ": TOKEN_TYPE, "kid": key.kid})
        signing_input = f"{header}.{segment(valid_claims())}"
        signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        refused(verifier, f"{signing_input}.{signature}")


def test_token_signed_by_an_unknown_key_is_refused(key: SigningKey, verifier: AccessTokenVerifier) -> None:
    attacker = ECKey.generate_key("P-256")
    for kid in ("attacker-key", key.kid, None):
        header: dict[str, Any] = {"alg": "ES256", "typ": TOKEN_TYPE}
        if kid is not None:
            header["kid"] = kid
        token = jwt.encode(header, valid_claims(), attacker, algorithms=["ES256"])
        refused(verifier, token)


def test_token_carrying_its_own_key_is_refused(verifier: AccessTokenVerifier) -> None:
    """An embedded `jwk` (or a `jku` pointing anywhere) must never be the key the token is checked with."""
    attacker = ECKey.generate_key("P-256")
    public = attacker.as_dict(private=False)
    for extra in ({"jwk": public}, {"jku": "https://evil.example/jwks.json", "kid": "attacker"}):
        token = jwt.encode({"alg": "ES256", "typ": TOKEN_TYPE, **extra}, valid_claims(), attacker, algorithms=["ES256"])
        refused(verifier, token)


def test_header_alg_must_match_the_named_key() -> None:
    """With ES256 and Ed25519 keys both in the ring, a token naming the ES256 key's kid but signed with Ed25519
    (here with the ring's own Ed25519 key) is refused: the kid and the alg must belong together."""
    es256, ed25519 = new_key("ES256", created_at=time.time() - 5), new_key("EdDSA")
    keys = Keys(KeyRing([retired(es256), ed25519]))
    verifier = AccessTokenVerifier(ISSUER, keys, RevocationList())
    assert keys.ring.algorithms == ["ES256", "Ed25519"]
    for signer, named in ((ed25519, es256), (es256, ed25519)):
        header = {"alg": signer.alg, "typ": TOKEN_TYPE, "kid": named.kid}
        token = jwt.encode(header, valid_claims(), signer.key, algorithms=[signer.alg])
        assert "unknown signing key" in refused(verifier, token)
    # Control: the same keys under their own kids verify.
    for signer in (es256, ed25519):
        header = {"alg": signer.alg, "typ": TOKEN_TYPE, "kid": signer.kid}
        verifier.verify(jwt.encode(header, valid_claims(), signer.key, algorithms=[signer.alg]), audience=AUDIENCE)


def test_overlong_token_is_refused_unparsed(keys: Keys, verifier: AccessTokenVerifier) -> None:
    token = keys.ring.sign(valid_claims(padding="x" * MAX_TOKEN_LENGTH), typ=TOKEN_TYPE)
    assert "too long" in refused(verifier, token)


# -- key rotation -------------------------------------------------------------------------------------------------


def test_rotated_out_key_keeps_verifying_until_it_is_removed() -> None:
    old = new_key(created_at=time.time() - 10)
    keys = Keys(KeyRing([old]))
    verifier = AccessTokenVerifier(ISSUER, keys, RevocationList())
    old_token = issue(keys)
    verifier.verify(old_token, audience=AUDIENCE)  # now in the verifier's cache

    # Rotation: a new active key; the old one is retired but still in the ring. The new one is published first:
    # the old one signs until every replica can have loaded the new one.
    new = new_key()
    keys.ring = KeyRing([retired(old), new])
    assert keys.ring.active.kid == old.kid
    assert new.kid in {jwk["kid"] for jwk in keys.ring.jwks()["keys"]}
    new = dataclasses.replace(new, created_at=time.time() - PUBLISH_BEFORE_SIGNING)
    keys.ring = KeyRing([retired(old), new])
    assert keys.ring.active.kid == new.kid
    new_token = issue(keys)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == new.kid
    assert verifier.verify(old_token, audience=AUDIENCE).subject == "user-1"
    assert verifier.verify(new_token, audience=AUDIENCE).subject == "user-1"

    # Removal: the old key leaves the ring, and its token stops verifying at once, cached or not.
    keys.ring = KeyRing([new])
    assert "unknown signing key" in refused(verifier, old_token)
    assert verifier.verify(new_token, audience=AUDIENCE).subject == "user-1"
    # A fresh verifier (another replica) agrees.
    assert "unknown signing key" in refused(AccessTokenVerifier(ISSUER, keys, RevocationList()), old_token)


def test_ring_refuses_to_exist_without_an_active_key() -> None:
    with pytest.raises(ValueError, match="no active signing key"):
        KeyRing([retired(new_key())])


def test_jwks_publishes_public_halves_only() -> None:
    ring = KeyRing([retired(new_key(created_at=time.time() - 5)), new_key("EdDSA")])
    for jwk in ring.jwks()["keys"]:
        assert not {"d", "p", "q", "k"} & jwk.keys()
        assert ring.key_for(jwk["kid"]) is not None
    assert ring.key_for(None) is None
    assert ring.key_for(["list"]) is None


# -- fuzzing: nothing but InvalidAccessToken, and nothing forged ever verifies ------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda raw: raw.decode("latin-1")))
def test_random_strings_never_verify(verifier: AccessTokenVerifier, candidate: str) -> None:
    refused(verifier, candidate)


@FUZZ
@given(st.lists(st.text(alphabet=BASE64URL + "=+/.", max_size=120), min_size=1, max_size=6))
def test_random_segments_never_verify(verifier: AccessTokenVerifier, segments: list[str]) -> None:
    refused(verifier, ".".join(segments))


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), json_values)
def test_random_json_segments_never_verify(
    verifier: AccessTokenVerifier, key: SigningKey, header: dict[str, Any], payload: Any
) -> None:
    header = {"alg": key.alg, "kid": key.kid, "typ": TOKEN_TYPE, **header}
    for signature in ("", b64(os.urandom(64))):
        refused(verifier, f"{segment(header)}.{b64(json.dumps(payload).encode())}.{signature}")


@FUZZ
@given(st.data())
def test_mutated_tokens_never_verify(keys: Keys, verifier: AccessTokenVerifier, data: st.DataObject) -> None:
    token = issue(keys)
    verifier.verify(token, audience=AUDIENCE)  # the original is valid, and cached
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    operation = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]), label="operation")
    alphabet = BASE64URL + ".=+/ "
    if operation == "replace":
        replacement = data.draw(st.sampled_from([c for c in alphabet if c != token[position]]), label="replacement")
        mutated = token[:position] + replacement + token[position + 1 :]
    elif operation == "delete":
        mutated = token[:position] + token[position + 1 :]
    elif operation == "insert":
        mutated = token[:position] + data.draw(st.sampled_from(alphabet), label="inserted") + token[position:]
    else:
        mutated = token[:position]
    assert mutated != token
    refused(verifier, mutated)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "tenant", "grant_id", "auth_time"]
        ),
        json_values,
        max_size=11,
    )
)
def test_signed_tokens_with_arbitrary_claims_fail_only_with_invalid_access_token(
    keys: Keys, verifier: AccessTokenVerifier, overrides: dict[str, Any]
) -> None:
    """Even a correctly signed token with any claim values at all is either accepted as a whole or refused cleanly."""
    claims = {**valid_claims(), **overrides}
    token = keys.ring.sign(claims, typ=TOKEN_TYPE)
    try:
        accepted = verifier.verify(token, audience=AUDIENCE)
    except InvalidAccessToken:
        return
    # Accepted only if every check would pass on the raw claims.
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE or AUDIENCE in claims["aud"]
    assert isinstance(claims["exp"], int)
    assert claims["exp"] > time.time()
    assert accepted.raw == claims
