"""ID token claim checks (OIDC Core §3.1.3.7) and the MFA rule (RFC 8176)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.sso.identity import SignInRefused
from chamberlain.sso.oidc.id_token import check_claims, proves_mfa

ISSUER = "https://idp.example.com"
NOW = 1_800_000_000.0


def _claims(**extra: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": "rp", "sub": "u1", "exp": NOW + 300, "iat": NOW, "nonce": "n"}
    return {name: value for name, value in (base | extra).items() if value is not None}


def _check(claims: dict[str, Any]) -> str:
    return check_claims(claims, issuer=ISSUER, client_id="rp", nonce="n", now=NOW)


def test_valid_claims_give_the_subject() -> None:
    assert _check(_claims()) == "u1"
    assert _check(_claims(aud=["rp", "other"], azp="rp")) == "u1"


def test_small_clock_skew_is_tolerated() -> None:
    assert _check(_claims(exp=NOW - 30, iat=NOW + 30)) == "u1"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": ISSUER + "/"}, "id_token_issuer"),  # exact comparison
        ({"iss": None}, "id_token_issuer"),
        ({"aud": None}, "id_token_audience"),
        ({"aud": ["other"]}, "id_token_audience"),
        ({"aud": {"rp": 1}}, "id_token_audience"),
        ({"aud": ["rp", "other"]}, "id_token_azp"),
        ({"azp": "other"}, "id_token_azp"),
        ({"exp": NOW - 61}, "id_token_expired"),
        ({"exp": None}, "id_token_malformed"),
        ({"exp": "tomorrow"}, "id_token_malformed"),
        ({"iat": True}, "id_token_malformed"),
        ({"iat": NOW + 61}, "id_token_iat"),
        ({"nonce": "m"}, "id_token_nonce"),
        ({"nonce": None}, "id_token_nonce"),
        ({"nonce": 1}, "id_token_nonce"),
        ({"sub": ""}, "id_token_subject"),
        ({"sub": "x" * 256}, "id_token_subject"),
    ],
)
def test_bad_claims_are_refused_with_their_reason(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        _check(_claims(**claims))
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("amr", "acr", "mfa_values", "expected"),
    [
        (["mfa"], None, (), True),
        (["pwd", "otp"], None, (), True),
        (["hwk", "pin"], None, (), True),  # a security key with its PIN
        (["face", "swk"], None, (), True),
        (["pwd"], None, (), False),
        (["otp"], None, (), False),  # one factor, whichever it is
        (["hwk", "user"], None, (), False),  # presence is not a factor
        (["pwd", "kba"], None, (), False),  # two things you know are one factor
        ([], "urn:okta:loa:2fa:any", ("urn:okta:loa:2fa:any",), True),
        ([], "urn:okta:loa:1fa:any", ("urn:okta:loa:2fa:any",), False),
        (["pwd", "custom"], None, ("custom",), True),
    ],
)
def test_mfa_rule(amr: list[str], acr: str | None, mfa_values: tuple[str, ...], expected: bool) -> None:
    assert proves_mfa(amr, acr, mfa_values) is expected


AMR = st.lists(st.sampled_from(["pwd", "pin", "kba", "otp", "hwk", "swk", "sms", "fpt", "face", "user", "x"]))


@given(amr=AMR, more=AMR)
def test_more_evidence_never_loses_mfa(amr: list[str], more: list[str]) -> None:
    if proves_mfa(amr, None, ()):
        assert proves_mfa(amr + more, None, ())


@given(amr=st.lists(st.sampled_from(["pwd", "pin", "kba", "user", "geo"])))
def test_knowledge_alone_never_proves_mfa(amr: list[str]) -> None:
    assert not proves_mfa(amr, None, ())
