"""The checks an ID token's claims must pass once its signature verifies (OIDC Core 1.0 §3.1.3.7), and what its
`amr`/`acr` prove about the second factor."""

from __future__ import annotations

import hmac
import time
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

from chamberlain.sso.identity import SignInRefused

CLOCK_SKEW_SECONDS = 60
# RFC 8176 §2 methods by factor: something you know, have, are. `user` (presence) and `swk` alone prove nothing more.
_KNOW = frozenset({"pwd", "pin", "kba"})
_HAVE = frozenset({"otp", "hwk", "swk", "sms", "tel", "sc"})
_ARE = frozenset({"fpt", "face", "iris", "retina", "vbm", "bio"})


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, client_id: str, nonce: str, now: float | None = None
) -> str:
    """Raises SignInRefused unless the claims are for us, from the issuer, current, and answer our request; returns
    `sub`."""
    now = time.time() if now is None else now
    if claims.get("iss") != issuer:  # §3.1.3.7 step 2: exact match
        raise _refused("id_token_issuer", "was issued by another issuer")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    if client_id not in audiences:  # step 3
        raise _refused("id_token_audience", "was issued for another application")
    azp = claims.get("azp")
    # Steps 4-5: with several audiences the authorized party must be named, and be us.
    if (len(audiences) > 1 and azp is None) or (azp is not None and azp != client_id):
        raise _refused("id_token_azp", "was issued to another authorized party")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not is_numeric_date(exp) or not is_numeric_date(iat):
        raise _refused("id_token_malformed", "lacks its exp or iat")
    if exp + CLOCK_SKEW_SECONDS <= now:  # step 9
        raise _refused("id_token_expired", "has expired")
    if iat - CLOCK_SKEW_SECONDS > now:  # step 10: not issued in the future
        raise _refused("id_token_iat", "was issued in the future")
    sent = claims.get("nonce")
    # Step 11: the nonce binds the token to this browser's sign-in (replay and injection protection).
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
        raise _refused("id_token_nonce", "does not answer this sign-in")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:  # §2: at most 255 ASCII characters
        raise _refused("id_token_subject", "has no valid subject")
    return subject


def proves_mfa(amr: Collection[str], acr: str | None, mfa_values: Collection[str]) -> bool:
    """A second factor is proven by `amr` containing `mfa` (RFC 8176 §2), or methods of two different factors
    (`pwd` + `otp`, `hwk` + `pin`, ...), or an `amr`/`acr` value the provider's configuration names."""
    methods = set(amr)
    if "mfa" in methods or methods & set(mfa_values) or (acr is not None and acr in mfa_values):
        return True
    return sum(1 for factor in (_KNOW, _HAVE, _ARE) if methods & factor) >= 2


def string_list(value: object) -> tuple[str, ...]:
    """A claim that is a string or an array of strings (OIDC Core §5.1 lets providers send either for groups)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def is_numeric_date(value: object) -> TypeGuard[int | float]:
    """A NumericDate (RFC 7519 §2); JSON booleans are not numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refused(reason: str, problem: str) -> SignInRefused:
    return SignInRefused(reason, f"The identity provider's ID token {problem}.")
