"""The SAML 2.0 Web Browser SSO profile (SAML Profiles §4.1) as a service provider, on python3-saml in strict mode.

We send the AuthnRequest with the HTTP-Redirect binding (Bindings §3.4), signed with the tenant's SP key, and take
the Response at our ACS with the HTTP-POST binding (Bindings §3.5).

What is accepted (python3-saml's strict checks, plus the stricter ones here where the profile says MUST):
- a signature by one of the provider's certificates over the assertion or over the whole response. Profiles §4.1.3.5:
  with HTTP-POST "each assertion MUST be protected by a digital signature ... by signing each individual <Assertion>
  element or by signing the <Response> element". So python3-saml's wantAssertionsSigned and wantMessagesSigned are
  both off and its own rule applies: at least one of the two is signed, and every signature there verifies. An
  unsigned assertion inside a signed response is covered by the response's signature; an unsigned response with an
  unsigned assertion is always refused. SHA-1 signatures and digests are refused (rejectDeprecatedAlgorithm).
- exactly one assertion, encrypted or not, and only the Response and that Assertion signed (no signature wrapping,
  XSW: python3-saml counts every <Assertion> anywhere in the document and reads data only from the signed one);
- an <Audience> that is our entity ID (§4.1.4.2: the assertion MUST have an AudienceRestriction with it);
- a bearer SubjectConfirmation whose Recipient is exactly our ACS URL and with a NotOnOrAfter (§4.1.4.2), and a
  Destination, when present (it must be on a signed response, Bindings §3.5.5.2), that is exactly our ACS URL;
- Conditions NotBefore / NotOnOrAfter within CLOCK_SKEW (Core §2.5.1.2);
- when we sent the AuthnRequest (request_id given), InResponseTo on the Response and on the SubjectConfirmationData
  equal to its ID: an unsolicited (IdP-initiated) response is refused (§4.1.4.2; login CSRF);
- a NameID that is not transient (a transient one names nobody twice, SAML Core §8.3.8).
The assertion's ID comes back for the caller's replay cache (§4.1.4.5), with until when it could be accepted.

Every failure is a SignInRefused with its own reason; neither the document nor python3-saml's error text (it quotes
parts of the document) is logged or shown.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as Constants
from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError
from onelogin.saml2.metadata import OneLogin_Saml2_Metadata
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from chamberlain.sso.identity import FederatedIdentity, IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.sso.saml.sp_credentials import SpCredentials

CLOCK_SKEW = 60  # seconds either way for NotBefore / NotOnOrAfter
MAX_RESPONSE_BYTES = 256 * 1024  # a base64 SAMLResponse larger than this is no sign-in answer we expect

# AuthnContextClassRef values that prove a second factor when the provider names none (`mfa_values`):
# - SAML Authn Context §3.4.14, §3.4.15, §3.4.21, §3.4.22: mobile two-factor, smartcard with PIN, time-sync token;
# - REFEDS MFA Profile (https://refeds.org/profile/mfa): Shibboleth, InCommon and many others;
# - Microsoft Entra ID and AD FS: http://schemas.microsoft.com/claims/multipleauthn.
DEFAULT_MFA_VALUES = (
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
    "https://refeds.org/profile/mfa",
    "http://schemas.microsoft.com/claims/multipleauthn",
)

_E = OneLogin_Saml2_ValidationError
# python3-saml's error codes, by what went wrong; anything else is "saml_invalid".
_REASONS: dict[int, tuple[str, str]] = {}
for _codes, _reason, _message in (
    ((_E.NO_SIGNATURE_FOUND,), "saml_unsigned", "The identity provider's answer is not signed."),
    (
        (_E.INVALID_SIGNATURE,),
        "saml_signature",
        "The identity provider's answer is not signed by the identity provider configured here.",
    ),
    (
        (_E.DEPRECATED_SIGNATURE_METHOD, _E.DEPRECATED_DIGEST_METHOD),
        "saml_signature_algorithm",
        "The identity provider signed its answer with SHA-1, which is not accepted; configure it to use SHA-256.",
    ),
    (
        (
            _E.WRONG_NUMBER_OF_ASSERTIONS,
            _E.WRONG_SIGNED_ELEMENT,
            _E.ID_NOT_FOUND_IN_SIGNED_ELEMENT,
            _E.DUPLICATED_ID_IN_SIGNED_ELEMENTS,
            _E.INVALID_SIGNED_ELEMENT,
            _E.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS,
            _E.UNEXPECTED_SIGNED_ELEMENTS,
            _E.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE,
            _E.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION,
        ),
        "saml_wrapped",
        "The identity provider's answer is not structured as a signed sign-in answer must be.",
    ),
    ((_E.STATUS_CODE_IS_NOT_SUCCESS,), "saml_status", "The identity provider did not sign you in."),
    ((_E.WRONG_INRESPONSETO,), "saml_in_response_to", "This answer is not for the sign-in started here."),
    ((_E.NO_ENCRYPTED_ASSERTION,), "saml_unencrypted", "The identity provider must encrypt its answer."),
    (
        (_E.ASSERTION_TOO_EARLY, _E.ASSERTION_EXPIRED, _E.SESSION_EXPIRED),
        "saml_expired",
        "The identity provider's answer has expired (or its clock is off). Please sign in again.",
    ),
    ((_E.WRONG_DESTINATION, _E.EMPTY_DESTINATION), "saml_destination", "This answer was sent to another place."),
    ((_E.WRONG_AUDIENCE,), "saml_audience", "This answer is meant for another service."),
    (
        (_E.WRONG_ISSUER, _E.ISSUER_MULTIPLE_IN_RESPONSE, _E.ISSUER_NOT_FOUND_IN_ASSERTION),
        "saml_issuer",
        "This answer is from another identity provider.",
    ),
    (
        (_E.WRONG_SUBJECTCONFIRMATION,),
        "saml_subject_confirmation",
        "This answer is not for this sign-in, or has expired. Please sign in again.",
    ),
    (
        (_E.NO_NAMEID, _E.EMPTY_NAMEID, _E.SP_NAME_QUALIFIER_NAME_MISMATCH),
        "saml_name_id",
        "The identity provider's answer does not say who you are.",
    ),
):
    for _code in _codes:
        _REASONS[_code] = (_reason, _message)

_MALFORMED = ("saml_malformed", "The identity provider's answer is malformed.")


@dataclass(frozen=True)
class SamlAssertion:
    identity: FederatedIdentity
    assertion_id: str  # for the replay cache (Profiles §4.1.4.5)
    not_on_or_after: float  # Unix time until which the assertion could be accepted: keep its ID at least that long


class SamlServiceProvider:
    def __init__(
        self, name: str, config: SamlProviderConfig, *, entity_id: str, acs_url: str, credentials: SpCredentials
    ) -> None:
        self.name = name
        self.config = config
        self.entity_id = entity_id
        self.acs_url = acs_url
        self._request_data = _request_data(acs_url)
        try:
            self._strict = OneLogin_Saml2_Settings(_settings(config, entity_id, acs_url, credentials, strict=True))
            # The same settings without strict mode check only structure and signatures: run first, so that a
            # forged document is reported as what it is, not by whichever other check it also fails.
            self._signatures = OneLogin_Saml2_Settings(_settings(config, entity_id, acs_url, credentials, strict=False))
        except OneLogin_Saml2_Error:
            raise IdentityProviderUnavailable(
                "saml_configuration", "Single sign-on is misconfigured here; tell an administrator."
            ) from None
        self._mfa_values = frozenset(config.mfa_values if config.mfa_values is not None else DEFAULT_MFA_VALUES)

    def metadata(self) -> str:
        """Our SP metadata (SAML Metadata §2.4.4): entity ID, ACS, and the certificate for signing and for encryption
        (always both: an IdP may encrypt whether or not this provider demands it). WantAssertionsSigned is true: we
        ask for signed assertions, though a signed response is accepted too (see the module's docstring)."""
        settings = self._strict
        metadata = OneLogin_Saml2_Metadata.builder(
            settings.get_sp_data(), authnsign=True, wsign=True, contacts={}, organization={}
        )
        with_keys: str | bytes = OneLogin_Saml2_Metadata.add_x509_key_descriptors(
            metadata, settings.get_sp_cert(), add_encryption=True
        )
        return with_keys.decode() if isinstance(with_keys, bytes) else with_keys

    def redirect_url(self, *, relay_state: str) -> tuple[str, str]:
        """The IdP's SSO URL with a signed AuthnRequest (HTTP-Redirect binding), and the request's ID."""
        auth = OneLogin_Saml2_Auth(self._request_data, self._strict)
        url: str = auth.login(return_to=relay_state)
        return url, str(auth.get_last_request_id())

    def complete(self, *, saml_response: str, request_id: str | None) -> SamlAssertion:
        """The identity in the SAMLResponse posted to our ACS. `request_id`: the AuthnRequest it must answer; None
        only where an unsolicited response is acceptable."""
        try:
            return self._complete(saml_response, request_id)
        except SignInRefused:
            raise
        except Exception:  # whatever a crafted document does to the parsers, the answer is a refusal, never a 500
            raise SignInRefused("saml_invalid", "The identity provider's answer could not be accepted.") from None

    def _complete(self, saml_response: str, request_id: str | None) -> SamlAssertion:
        decoded = _decoded(saml_response)
        self._validate(saml_response, decoded, self._signatures, request_id)
        response = self._validate(saml_response, decoded, self._strict, request_id)
        document = response.get_xml_document()
        _check_destination(document, self.acs_url)
        _check_in_response_to(response, request_id)
        # python3-saml's own query for the assertion the verified signature covers (no public accessor).
        assertion = _only(response._query_assertion(""), *_MALFORMED)
        _check_audience(response, self.entity_id)
        _check_conditions(assertion)
        not_on_or_after = _check_bearer_confirmation(assertion, self.acs_url, request_id)
        return SamlAssertion(
            identity=self._identity(response),
            assertion_id=_only([assertion.get("ID")], *_MALFORMED),
            not_on_or_after=not_on_or_after + CLOCK_SKEW,
        )

    def _validate(
        self, saml_response: str, decoded: bytes, settings: OneLogin_Saml2_Settings, request_id: str | None
    ) -> OneLogin_Saml2_Response:
        try:
            response = OneLogin_Saml2_Response(settings, saml_response)
        except Exception:  # not XML, a DTD (refused), or an encrypted assertion not for our key
            if b"EncryptedAssertion" in decoded:
                raise SignInRefused(
                    "saml_decryption", "The identity provider's answer is not encrypted for this service."
                ) from None
            raise SignInRefused(*_MALFORMED) from None
        try:
            response.is_valid(self._request_data, request_id, raise_exceptions=True)
        except OneLogin_Saml2_ValidationError as problem:
            reason, message = _REASONS.get(problem.code, ("saml_invalid", "The identity provider's answer is invalid."))
            raise SignInRefused(reason, message) from None
        return response

    def _identity(self, response: OneLogin_Saml2_Response) -> FederatedIdentity:
        name_id = response.get_nameid_data()
        subject = str(name_id.get("Value") or "").strip()
        if not subject or name_id.get("Format") == Constants.NAMEID_TRANSIENT:
            raise SignInRefused(
                "saml_name_id",
                "The identity provider sent no lasting name for you (a transient NameID); it must send a persistent"
                " one or an email address.",
            )
        attributes = _Attributes(response)
        contexts = tuple(str(value) for value in response.get_authn_contexts() if value)
        return FederatedIdentity(
            provider=self.name,
            subject=subject,
            email=_first(attributes.values(self.config.email_attribute)) or _email_name_id(name_id),
            display_name=_first(attributes.values(self.config.name_attribute)),
            groups=tuple(value for value in attributes.values(self.config.groups_attribute) if isinstance(value, str)),
            mfa=any(context in self._mfa_values for context in contexts),
            authn_context=contexts,
        )


def _settings(
    config: SamlProviderConfig, entity_id: str, acs_url: str, credentials: SpCredentials, *, strict: bool
) -> dict[str, Any]:
    return {
        "strict": strict,
        "debug": False,
        "sp": {
            "entityId": entity_id,
            "assertionConsumerService": {"url": acs_url, "binding": Constants.BINDING_HTTP_POST},
            # Let the IdP choose the NameID it has (persistent, email, ...); a transient one is refused on arrival.
            "NameIDFormat": Constants.NAMEID_UNSPECIFIED,
            "x509cert": credentials.certificate,
            "privateKey": credentials.private_key,
        },
        "idp": {
            "entityId": config.idp_entity_id,
            "singleSignOnService": {"url": config.sso_url, "binding": Constants.BINDING_HTTP_REDIRECT},
            "x509certMulti": {"signing": list(config.certificates)},
        },
        "security": {
            "authnRequestsSigned": True,
            "wantAssertionsSigned": False,  # Profiles §4.1.3.5: the assertion's or the response's signature
            "wantMessagesSigned": False,
            "wantAssertionsEncrypted": config.want_assertions_encrypted,
            "wantNameId": True,
            "wantAttributeStatement": False,  # groups and email are optional; the NameID is the identity
            "requestedAuthnContext": False,  # MFA is Chamberlain's decision (sso/mfa.py), not a request to the IdP
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": Constants.RSA_SHA256,
            "digestAlgorithm": Constants.SHA256,
            "allowRepeatAttributeName": True,  # some IdPs send each group as its own <Attribute>
        },
    }


def _request_data(acs_url: str) -> dict[str, Any]:
    """The ACS as python3-saml expects to learn it from the request: we state it, so Destination and Recipient are
    compared with the configured URL, not with whatever Host header a request came with."""
    parts = urlsplit(acs_url)
    return {"https": "on" if parts.scheme == "https" else "off", "http_host": parts.netloc, "script_name": parts.path}


def _decoded(saml_response: str) -> bytes:
    if not saml_response or len(saml_response) > MAX_RESPONSE_BYTES:
        raise SignInRefused(*_MALFORMED)
    try:
        return base64.b64decode(saml_response, validate=True)
    except (binascii.Error, ValueError):
        raise SignInRefused(*_MALFORMED) from None


def _only(values: list[Any], reason: str, message: str) -> Any:
    if len(values) != 1 or values[0] is None:
        raise SignInRefused(reason, message)
    return values[0]


def _check_destination(document: Any, acs_url: str) -> None:
    # python3-saml compares by prefix; the binding wants our ACS exactly (Bindings §3.5.5.2).
    destination = document.get("Destination")
    if destination is not None and destination != acs_url:
        raise SignInRefused(*_REASONS[_E.WRONG_DESTINATION])


def _check_in_response_to(response: OneLogin_Saml2_Response, request_id: str | None) -> None:
    # python3-saml accepts a response without InResponseTo even when we sent a request: not here (login CSRF).
    if request_id is not None and response.get_in_response_to() != request_id:
        raise SignInRefused(*_REASONS[_E.WRONG_INRESPONSETO])


def _check_audience(response: OneLogin_Saml2_Response, entity_id: str) -> None:
    # python3-saml passes an assertion without any AudienceRestriction; Profiles §4.1.4.2 requires one with us.
    if entity_id not in response.get_audiences():
        raise SignInRefused(*_REASONS[_E.WRONG_AUDIENCE])


def _check_conditions(assertion: Any) -> None:
    # python3-saml allows 300 s of clock drift; ours is CLOCK_SKEW.
    now = time.time()
    for conditions in OneLogin_Saml2_XML.query(assertion, "./saml:Conditions"):
        not_before = _instant(conditions.get("NotBefore"))
        not_on_or_after = _instant(conditions.get("NotOnOrAfter"))
        if (not_before is not None and not_before > now + CLOCK_SKEW) or (
            not_on_or_after is not None and not_on_or_after + CLOCK_SKEW <= now
        ):
            raise SignInRefused(*_REASONS[_E.ASSERTION_EXPIRED])


def _check_bearer_confirmation(assertion: Any, acs_url: str, request_id: str | None) -> float:
    """Profiles §4.1.4.2: a bearer SubjectConfirmationData with Recipient = our ACS (exactly: python3-saml checks a
    substring), a NotOnOrAfter still ahead, and InResponseTo = our request. Returns its NotOnOrAfter."""
    now = time.time()
    for data in OneLogin_Saml2_XML.query(
        assertion,
        "./saml:Subject/saml:SubjectConfirmation[@Method=$tagid]/saml:SubjectConfirmationData",
        None,
        Constants.CM_BEARER,
    ):
        not_on_or_after = _instant(data.get("NotOnOrAfter"))
        if (
            data.get("Recipient") == acs_url
            and not_on_or_after is not None
            and not_on_or_after > now
            and (request_id is None or data.get("InResponseTo") == request_id)
        ):
            return not_on_or_after
    raise SignInRefused(*_REASONS[_E.WRONG_SUBJECTCONFIRMATION])


def _instant(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(OneLogin_Saml2_Utils.parse_SAML_to_time(value))
    except ValueError:
        raise SignInRefused(*_MALFORMED) from None


class _Attributes:
    """The assertion's attributes by Name, else by FriendlyName: IdPs that send names as OIDs (urn:oid:...,
    SAML Core §2.7.3.1 with the X.500/LDAP profile) still call `mail` "email" or "mail" in FriendlyName."""

    def __init__(self, response: OneLogin_Saml2_Response) -> None:
        self._by_name: dict[str, list[Any]] = response.get_attributes()
        self._by_friendly_name: dict[str, list[Any]] = response.get_friendlyname_attributes()

    def values(self, name: str) -> list[Any]:
        found = self._by_name.get(name)
        return found if found is not None else self._by_friendly_name.get(name, [])


def _first(values: list[Any] | None) -> str | None:
    for value in values or ():
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _email_name_id(name_id: dict[str, str]) -> str | None:
    return name_id.get("Value") if name_id.get("Format") == Constants.NAMEID_EMAIL_ADDRESS else None
