"""The ID-JAG grant's claim rules (oauth/grants/jwt_bearer.py) at their edges; tests/integration/test_id_jag.py drives
the whole grant through the token endpoint."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import OAuthError
from chamberlain.oauth.grants import jwt_bearer
from chamberlain.tenancy.tenant import ProtectedResource, Tenant

ISSUER = "https://chamberlain.example.com/t/acme"


@pytest.mark.parametrize("typ", ["oauth-id-jag+jwt", "application/oauth-id-jag+jwt", "OAuth-ID-JAG+JWT"])
def test_the_id_jag_media_type_is_recognised_as_rfc_7515_compares_it(typ: str) -> None:
    assert jwt_bearer._is_id_jag_type(typ)


@pytest.mark.parametrize("typ", [None, "", "JWT", "at+jwt", "id-jag+jwt", "application/jwt", "text/oauth-id-jag+jwt"])
def test_other_types_are_not_an_id_jag(typ: str | None) -> None:
    assert not jwt_bearer._is_id_jag_type(typ)


def tenant(**attributes: Any) -> Tenant:
    return cast(Tenant, SimpleNamespace(issuer=ISSUER, **attributes))


@pytest.mark.parametrize("aud", [ISSUER, [ISSUER]])
def test_aud_is_our_issuer_alone(aud: object) -> None:
    jwt_bearer._check_audience(tenant(), aud)


@pytest.mark.parametrize(
    "aud", [None, 7, [], [ISSUER, ISSUER], [ISSUER, "https://other.example"], ISSUER + "/", ISSUER.upper(), {"a": 1}]
)
def test_any_other_aud_is_refused(aud: object) -> None:
    with pytest.raises(OAuthError) as refused:
        jwt_bearer._check_audience(tenant(), aud)
    assert refused.value.error == "invalid_grant"


def test_times_within_the_rules_give_the_expiry() -> None:
    now = time.time()
    assert jwt_bearer._check_times({"iat": int(now), "exp": int(now) + 300}) == int(now) + 300
    # Clocks drift: an iat or nbf a little ahead of ours is accepted; fractional NumericDates are numbers too.
    assert jwt_bearer._check_times({"iat": now + 30, "nbf": now + 30, "exp": now + 300.5}) == now + 300.5


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": True, "exp": "{soon}"},  # a JSON boolean is not a NumericDate
        {"iat": "{now}", "exp": str(int(time.time()) + 300)},
        {"iat": "{now}", "exp": "{now}"},  # expires now: already expired
        {"iat": "{now}", "exp": "{soon}", "nbf": "1"},
        {"iat": "{now}", "exp": "{soon}", "nbf": "{in_two_minutes}"},
        {"iat": "{in_two_minutes}", "exp": "{soon}"},
        {"iat": "{now}", "exp": "{past_the_lifetime}"},
    ],
)
def test_times_outside_the_rules_are_refused(claims: dict[str, Any]) -> None:
    now = int(time.time())
    moments = {
        "{now}": now,
        "{soon}": now + 300,
        "{in_two_minutes}": now + 120,
        "{past_the_lifetime}": now + jwt_bearer.MAX_LIFETIME + 1,
    }
    filled = {name: moments.get(value, value) if isinstance(value, str) else value for name, value in claims.items()}
    with pytest.raises(OAuthError) as refused:
        jwt_bearer._check_times(filled)
    assert refused.value.error == "invalid_grant"


def resource(scopes: tuple[str, ...]) -> ProtectedResource:
    return cast(ProtectedResource, SimpleNamespace(server=SimpleNamespace(scopes=scopes), resource=f"{ISSUER}/mcp/x"))


def client(scope: str | None) -> Client:
    return cast(Client, SimpleNamespace(metadata=SimpleNamespace(scope=scope)))


def scopes_of(claimed: object, *, registered: str | None = None, requested: str | None = None) -> frozenset[str]:
    app = tenant(settings=SimpleNamespace(scopes=("mcp:tools", "mcp:admin")))
    return jwt_bearer._scopes(app, client(registered), resource(("db:read",)), claimed, requested)


def test_scopes_are_what_the_idp_granted_narrowed_to_what_is_known_and_registered() -> None:
    assert scopes_of("mcp:tools db:read chat.history") == {"mcp:tools", "db:read"}
    # No scope claim: the resource's own scopes, as for the other grants.
    assert scopes_of(None) == {"db:read"}
    # The client registered a scope (RFC 7591 §2): it never gets more.
    assert scopes_of("mcp:tools mcp:admin", registered="mcp:tools") == {"mcp:tools"}
    # A scope parameter (RFC 7521 §4.1) narrows further, and never widens.
    assert scopes_of("mcp:tools mcp:admin", requested="mcp:admin db:read") == {"mcp:admin"}


@pytest.mark.parametrize(
    ("claimed", "registered", "requested"),
    [("chat.history", None, None), ("mcp:admin", "mcp:tools", None), ("mcp:tools", None, "mcp:admin")],
)
def test_no_scope_left_is_refused(claimed: str, registered: str | None, requested: str | None) -> None:
    with pytest.raises(OAuthError) as refused:
        scopes_of(claimed, registered=registered, requested=requested)
    assert refused.value.error == "invalid_scope"


@pytest.mark.parametrize("claimed", [["mcp:tools"], 3, {"scope": "mcp:tools"}])
def test_a_scope_claim_that_is_not_a_string_is_refused(claimed: object) -> None:
    with pytest.raises(OAuthError) as refused:
        scopes_of(claimed)
    assert refused.value.error == "invalid_grant"
