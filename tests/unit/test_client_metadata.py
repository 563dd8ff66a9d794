"""RFC 7591 §2 client metadata parsing."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.oauth.client_metadata import (
    MAX_DOCUMENT_BYTES,
    ClientMetadata,
    parse_client_metadata,
)
from chamberlain.oauth.errors import INVALID_CLIENT_METADATA, INVALID_REDIRECT_URI, OAuthError

PUBLIC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9",
}


def _doc(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"redirect_uris": ["https://client.example/cb"]}
    base.update(members)
    return {name: value for name, value in base.items() if value is not _ABSENT}


_ABSENT = object()


def _refused(data: object, error: str = INVALID_CLIENT_METADATA, **kwargs: Any) -> str:
    with pytest.raises(OAuthError) as caught:
        parse_client_metadata(data, **kwargs)
    assert caught.value.error == error, caught.value.description
    assert caught.value.description
    return caught.value.description


def test_defaults_follow_rfc7591() -> None:
    metadata = parse_client_metadata({"redirect_uris": ["https://client.example/cb"]})
    assert metadata == ClientMetadata(redirect_uris=["https://client.example/cb"])
    # RFC 7591 §2 defaults.
    assert metadata.token_endpoint_auth_method == "client_secret_basic"
    assert metadata.grant_types == ["authorization_code"]
    assert metadata.response_types == ["code"]
    assert not metadata.is_public


def test_default_auth_method_can_be_overridden() -> None:
    metadata = parse_client_metadata(_doc(), default_auth_method="none")
    assert metadata.token_endpoint_auth_method == "none"
    assert metadata.is_public


def test_full_document() -> None:
    metadata = parse_client_metadata(
        {
            "redirect_uris": ["http://127.0.0.1:3000/cb", "http://localhost:3000/cb"],
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "client_name": "Example MCP Client",
            "client_uri": "https://client.example",
            "logo_uri": "https://client.example/logo.png",
            "scope": "mcp:tools offline_access",
            "contacts": ["ops@client.example"],
            "tos_uri": "https://client.example/tos",
            "policy_uri": "https://client.example/privacy",
            "jwks": {"keys": [PUBLIC_JWK]},
            "software_id": "4NRB1-0XZABZI9E6-5SM3R",
            "software_version": "2.1",
            "client_name#ja-Jpan-JP": "クライアント名",
            "some_extension": {"ignored": True},
        }
    )
    assert metadata.client_name == "Example MCP Client"
    assert metadata.jwks == {"keys": [PUBLIC_JWK]}
    assert metadata.grant_types == ["authorization_code", "refresh_token", "client_credentials"]
    assert metadata.scope == "mcp:tools offline_access"
    assert not hasattr(metadata, "some_extension")


def test_null_members_read_as_absent() -> None:
    metadata = parse_client_metadata(_doc(client_name=None, logo_uri=None, grant_types=None, contacts=None))
    assert metadata.client_name is None
    assert metadata.grant_types == ["authorization_code"]


def test_duplicate_list_entries_are_collapsed() -> None:
    metadata = parse_client_metadata(
        _doc(redirect_uris=["https://client.example/cb"] * 2, grant_types=["authorization_code"] * 2)
    )
    assert metadata.redirect_uris == ["https://client.example/cb"]
    assert metadata.grant_types == ["authorization_code"]


@pytest.mark.parametrize("data", [None, [], "x", 1, {1: "x"}])
def test_refuses_non_objects(data: object) -> None:
    _refused(data)


@pytest.mark.parametrize(
    ("members", "error"),
    [
        # Types: a string where a list is required is an error, not a one-item list.
        ({"redirect_uris": "https://client.example/cb"}, INVALID_REDIRECT_URI),
        ({"redirect_uris": [1]}, INVALID_REDIRECT_URI),
        ({"redirect_uris": [""]}, INVALID_REDIRECT_URI),
        ({"grant_types": "authorization_code"}, INVALID_CLIENT_METADATA),
        ({"response_types": "code"}, INVALID_CLIENT_METADATA),
        ({"contacts": "ops@client.example"}, INVALID_CLIENT_METADATA),
        ({"contacts": ["a\nb"]}, INVALID_CLIENT_METADATA),
        ({"client_name": ["x"]}, INVALID_CLIENT_METADATA),
        ({"client_name": ""}, INVALID_CLIENT_METADATA),
        ({"client_name": "x" * 201}, INVALID_CLIENT_METADATA),
        ({"client_name": "bad\x00name"}, INVALID_CLIENT_METADATA),
        ({"software_id": "x" * 2001}, INVALID_CLIENT_METADATA),
        ({"scope": 5}, INVALID_CLIENT_METADATA),
        ({"scope": "a  b"}, INVALID_CLIENT_METADATA),
        ({"scope": 'a"b'}, INVALID_CLIENT_METADATA),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, INVALID_CLIENT_METADATA),
        ({"token_endpoint_auth_method": "tls_client_auth"}, INVALID_CLIENT_METADATA),
        ({"token_endpoint_auth_method": ["none"]}, INVALID_CLIENT_METADATA),
        # Grant and response types.
        ({"grant_types": ["implicit"]}, INVALID_CLIENT_METADATA),
        ({"grant_types": ["password"]}, INVALID_CLIENT_METADATA),
        ({"grant_types": []}, INVALID_CLIENT_METADATA),
        ({"response_types": ["token"]}, INVALID_CLIENT_METADATA),
        ({"response_types": ["code id_token"]}, INVALID_CLIENT_METADATA),
        ({"response_types": []}, INVALID_CLIENT_METADATA),
        ({"grant_types": ["refresh_token"]}, INVALID_CLIENT_METADATA),
        ({"grant_types": ["client_credentials"], "response_types": ["code"]}, INVALID_CLIENT_METADATA),
        ({"redirect_uris": []}, INVALID_REDIRECT_URI),
        ({"redirect_uris": _ABSENT}, INVALID_REDIRECT_URI),
        # Redirect URIs go through validate_redirect_uri.
        ({"redirect_uris": ["http://client.example/cb"]}, INVALID_REDIRECT_URI),
        ({"redirect_uris": ["https://client.example/cb#x"]}, INVALID_REDIRECT_URI),
        ({"redirect_uris": ["javascript:alert(1)"]}, INVALID_REDIRECT_URI),
        ({"redirect_uris": ["https://good.example@evil.example/"]}, INVALID_REDIRECT_URI),
        ({"redirect_uris": [f"https://client.example/{i}" for i in range(11)]}, INVALID_REDIRECT_URI),
        # Display and key URIs must be https.
        ({"client_uri": "http://client.example"}, INVALID_CLIENT_METADATA),
        ({"logo_uri": "javascript:alert(1)"}, INVALID_CLIENT_METADATA),
        ({"logo_uri": "data:image/png;base64,AAAA"}, INVALID_CLIENT_METADATA),
        ({"tos_uri": "https://"}, INVALID_CLIENT_METADATA),
        ({"policy_uri": "https://good.example@evil.example/"}, INVALID_CLIENT_METADATA),
        ({"policy_uri": "https://client.example:99999/"}, INVALID_CLIENT_METADATA),
        ({"client_uri": "https://client.example/\tx"}, INVALID_CLIENT_METADATA),
        (
            {"jwks_uri": "http://client.example/jwks", "token_endpoint_auth_method": "private_key_jwt"},
            INVALID_CLIENT_METADATA,
        ),
        # Bounded sizes.
        ({"contacts": [f"c{i}@client.example" for i in range(11)]}, INVALID_CLIENT_METADATA),
        ({"junk": "x" * MAX_DOCUMENT_BYTES}, INVALID_CLIENT_METADATA),
        # Key material (RFC 7591 §2).
        (
            {"jwks": {"keys": [PUBLIC_JWK]}, "jwks_uri": "https://client.example/jwks"},
            INVALID_CLIENT_METADATA,
        ),
        ({"token_endpoint_auth_method": "private_key_jwt"}, INVALID_CLIENT_METADATA),
        ({"jwks": [PUBLIC_JWK]}, INVALID_CLIENT_METADATA),
        ({"jwks": {"keys": []}}, INVALID_CLIENT_METADATA),
        ({"jwks": {"keys": [{"crv": "P-256"}]}}, INVALID_CLIENT_METADATA),
        ({"jwks": {"keys": [{**PUBLIC_JWK, "d": "private"}]}}, INVALID_CLIENT_METADATA),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, INVALID_CLIENT_METADATA),
    ],
)
def test_refuses_invalid_metadata(members: dict[str, Any], error: str) -> None:
    _refused(_doc(**members), error)


def test_client_credentials_requires_a_confidential_client() -> None:
    members = {"grant_types": ["client_credentials"], "redirect_uris": _ABSENT}
    description = _refused(_doc(**members, token_endpoint_auth_method="none"))
    assert "confidential" in description
    metadata = parse_client_metadata(_doc(**members, token_endpoint_auth_method="client_secret_basic"))
    assert metadata.response_types == []
    assert metadata.redirect_uris == []


def test_private_key_jwt_with_jwks_uri() -> None:
    metadata = parse_client_metadata(
        _doc(token_endpoint_auth_method="private_key_jwt", jwks_uri="https://client.example/jwks.json")
    )
    assert metadata.jwks_uri == "https://client.example/jwks.json"


def test_max_redirect_uris_is_configurable() -> None:
    uris = [f"https://client.example/{i}" for i in range(3)]
    assert parse_client_metadata({"redirect_uris": uris}, max_redirect_uris=3).redirect_uris == uris
    _refused({"redirect_uris": uris}, INVALID_REDIRECT_URI, max_redirect_uris=2)


def test_refuses_bidi_overrides_in_display_strings() -> None:
    # U+202E RIGHT-TO-LEFT OVERRIDE makes a consent screen show a different name than the bytes say.
    _refused(_doc(client_name="evil\u202eelgooG"))


def test_refuses_non_json_values() -> None:
    _refused(_doc(extra=float("nan")))
    _refused(_doc(extra=object()))


def test_metadata_is_frozen() -> None:
    metadata = parse_client_metadata(_doc())
    with pytest.raises(AttributeError):
        metadata.client_name = "other"  # type: ignore[misc]


# --- property-based ------------------------------------------------------------------------------

# Printable text: letters, marks, numbers, punctuation, symbols and the ASCII space.
_TEXT = st.text(st.characters(categories=["L", "M", "N", "P", "S"], include_characters=" "), min_size=1)
_SCOPE_TOKEN = st.text(string.ascii_letters + string.digits + ":_-.", min_size=1, max_size=10)


@st.composite
def _valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {
        "redirect_uris": draw(
            st.lists(
                st.sampled_from(
                    [
                        "https://client.example/cb",
                        "http://127.0.0.1/cb",
                        "http://localhost:8/x",
                        "com.example.app:/cb",
                    ]
                ),
                min_size=1,
                max_size=4,
                unique=True,
            )
        ),
        "token_endpoint_auth_method": draw(
            st.sampled_from(["none", "client_secret_basic", "client_secret_post", "private_key_jwt"])
        ),
        "grant_types": [
            "authorization_code",
            *draw(st.sets(st.sampled_from(["refresh_token", "client_credentials"]))),
        ],
    }
    if document["token_endpoint_auth_method"] == "none" and "client_credentials" in document["grant_types"]:
        document["grant_types"].remove("client_credentials")
    if document["token_endpoint_auth_method"] == "private_key_jwt":
        document["jwks_uri"] = "https://client.example/jwks.json"
    for name in ("client_name", "software_id", "software_version"):
        if draw(st.booleans()):
            document[name] = draw(_TEXT.filter(lambda text: len(text) <= 200))
    if draw(st.booleans()):
        document["scope"] = " ".join(draw(st.lists(_SCOPE_TOKEN, min_size=1, max_size=4)))
    if draw(st.booleans()):
        document["contacts"] = draw(st.lists(_TEXT.filter(lambda t: len(t) < 50), max_size=3, unique=True))
    return document


@given(_valid_documents())
def test_to_dict_round_trips(document: dict[str, Any]) -> None:
    metadata = parse_client_metadata(document)
    assert parse_client_metadata(metadata.to_dict()) == metadata
    assert parse_client_metadata(metadata.to_dict(), default_auth_method="none") == metadata


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_MEMBER_NAMES = st.sampled_from(
    [
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "client_name",
        "client_uri",
        "logo_uri",
        "scope",
        "contacts",
        "tos_uri",
        "policy_uri",
        "jwks_uri",
        "jwks",
        "software_id",
        "software_version",
        "other",
    ]
)


@given(st.dictionaries(_MEMBER_NAMES, _JSON, max_size=8))
def test_arbitrary_json_is_either_valid_or_an_oauth_error(document: dict[str, Any]) -> None:
    try:
        metadata = parse_client_metadata(document)
    except OAuthError as error:
        failure: OAuthError | None = error
    else:
        failure = None
        assert parse_client_metadata(metadata.to_dict()) == metadata
    assert failure is None or failure.error in (INVALID_CLIENT_METADATA, INVALID_REDIRECT_URI)


@given(st.sampled_from(["redirect_uris", "grant_types", "response_types", "contacts"]), st.text(min_size=1))
def test_a_string_where_a_list_is_required_is_refused(name: str, value: str) -> None:
    with pytest.raises(OAuthError):
        parse_client_metadata(_doc(**{name: value}))
