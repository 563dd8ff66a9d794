"""The SAML service provider against a real IdP (pysaml2, signing with xmlsec1) on loopback: what a good answer
gives, and that every forged, misdirected or stale answer is refused with its own reason."""

from __future__ import annotations

import base64
import copy
import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from chamberlain.sso.identity import SignInRefused
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.sso.saml.metadata import MetadataError, fetch_idp_metadata, parse_idp_metadata
from chamberlain.sso.saml.service_provider import SamlServiceProvider
from chamberlain.sso.saml.sp_credentials import SpCredentials, generate_sp_credentials
from tests.support.saml_idp import REFEDS_MFA, IdpOptions, SamlIdp, form_fields, other_signer, running_saml_idp

pytestmark = pytest.mark.interop

SP_BASE = "https://chamberlain.example.org/t/acme/sso/corp"  # never contacted: the SP only compares URLs
ENTITY_ID = f"{SP_BASE}/metadata"
ACS = f"{SP_BASE}/acs"
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}


@pytest.fixture(scope="module")
def credentials() -> SpCredentials:
    return generate_sp_credentials("test SP")


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory, credentials: SpCredentials) -> Iterator[SamlIdp]:
    with running_saml_idp(tmp_path_factory.mktemp("saml-idp")) as running:
        running.trust(service_provider(running, credentials).metadata())
        yield running


@pytest.fixture(autouse=True)
def default_options(idp: SamlIdp) -> None:
    idp.options = IdpOptions()


def service_provider(idp: SamlIdp, credentials: SpCredentials, **config: Any) -> SamlServiceProvider:
    return SamlServiceProvider(
        "corp",
        SamlProviderConfig(**idp.provider_config(**config)),
        entity_id=ENTITY_ID,
        acs_url=ACS,
        credentials=credentials,
    )


def sign_in(idp: SamlIdp, sp: SamlServiceProvider, user: str = "alice", **answer: Any) -> tuple[str, str]:
    """(SAMLResponse, AuthnRequest ID) for a sign-in started at `sp`."""
    url, request_id = sp.redirect_url(relay_state="relay-1")
    saml_response, relay_state = idp.answer(url, user, **answer)
    assert relay_state == "relay-1"
    return saml_response, request_id


def refused(sp: SamlServiceProvider, saml_response: str, request_id: str | None) -> str:
    with pytest.raises(SignInRefused) as caught:
        sp.complete(saml_response=saml_response, request_id=request_id)
    assert "<" not in caught.value.message  # never the document
    return caught.value.reason


def edited(saml_response: str, edit: Callable[[Any], None]) -> str:
    """The response with `edit` applied to its already signed document (as an attacker would: no re-signing)."""
    root = etree.fromstring(base64.b64decode(saml_response))
    edit(root)
    return base64.b64encode(etree.tostring(root)).decode()


def instant(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- a good answer ----------------------------------------------------------------------------------------------------


def test_a_signed_assertion_signs_the_person_in(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)
    assertion = sp.complete(saml_response=saml_response, request_id=request_id)
    identity = assertion.identity
    assert (identity.provider, identity.subject, identity.email) == ("corp", "alice", "alice@example.com")
    assert identity.display_name == "Alice Example"
    assert identity.groups == ("engineering", "admins")
    assert identity.mfa
    assert identity.authn_context == (REFEDS_MFA,)
    assert assertion.assertion_id
    root = etree.fromstring(base64.b64decode(saml_response))
    confirmation = root.find(".//saml:SubjectConfirmationData", NS)
    assert confirmation is not None
    assert assertion.not_on_or_after >= datetime.datetime.fromisoformat(confirmation.get("NotOnOrAfter")).timestamp()


def test_a_password_only_sign_in_is_not_mfa(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp, "bob")
    identity = sp.complete(saml_response=saml_response, request_id=request_id).identity
    assert identity.subject == "bob"
    assert not identity.mfa
    assert identity.groups == ("sales",)


def test_the_provider_decides_which_contexts_are_mfa(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials, mfa_values=["urn:example:hardware-key"])
    idp.options = IdpOptions(authn_context="urn:example:hardware-key")
    saml_response, request_id = sign_in(idp, sp, "bob")
    assert sp.complete(saml_response=saml_response, request_id=request_id).identity.mfa


def test_an_unsigned_assertion_in_a_signed_response_is_accepted(idp: SamlIdp, credentials: SpCredentials) -> None:
    # SAML Profiles §4.1.3.5: the response's signature protects the assertion.
    idp.options = IdpOptions(sign_response=True, sign_assertion=False)
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)
    assert sp.complete(saml_response=saml_response, request_id=request_id).identity.subject == "alice"


def test_an_encrypted_assertion_is_decrypted_with_our_key(idp: SamlIdp, credentials: SpCredentials) -> None:
    idp.options = IdpOptions(sign_assertion=True, encrypt_assertion=True)
    sp = service_provider(idp, credentials, want_assertions_encrypted=True)
    saml_response, request_id = sign_in(idp, sp)
    assert b"EncryptedAssertion" in base64.b64decode(saml_response)
    identity = sp.complete(saml_response=saml_response, request_id=request_id).identity
    assert identity.subject == "alice"
    assert identity.groups == ("engineering", "admins")


def test_a_comment_in_the_name_id_does_not_truncate_it(idp: SamlIdp, credentials: SpCredentials) -> None:
    # CVE-2017-11427 class: comments are outside the canonical form the signature covers.
    sp = service_provider(idp, credentials)

    def comment(root: Any) -> None:
        name_id = root.find(".//saml:NameID", NS)
        name_id.text = "alice"
        name_id.append(etree.Comment("x"))
        name_id[-1].tail = ".evil.example"

    saml_response, request_id = sign_in(idp, sp, tamper=comment)
    assert sp.complete(saml_response=saml_response, request_id=request_id).identity.subject == "alice.evil.example"


# -- refusals ---------------------------------------------------------------------------------------------------------


def test_an_unsigned_response_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    idp.options = IdpOptions(sign_response=False, sign_assertion=False)
    sp = service_provider(idp, credentials)
    assert refused(sp, *sign_in(idp, sp)) == "saml_unsigned"


def test_an_assertion_signed_by_another_key_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    assert refused(sp, *sign_in(idp, sp, signer=other_signer())) == "saml_signature"


def test_an_edited_signed_assertion_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)

    def become_admin(root: Any) -> None:
        root.find(".//saml:NameID", NS).text = "root"

    assert refused(sp, edited(saml_response, become_admin), request_id) == "saml_signature"


def _evil(assertion: Any) -> Any:
    """A copy of the signed assertion naming someone else, without its signature and with its own ID."""
    evil = copy.deepcopy(assertion)
    evil.remove(evil.find("ds:Signature", NS))
    evil.set("ID", "id-evil")
    evil.find(".//saml:NameID", NS).text = "root"
    return evil


def _xsw_sibling_before(root: Any) -> None:  # XSW3: the evil assertion first, the signed one after it
    signed = root.find("saml:Assertion", NS)
    signed.addprevious(_evil(signed))


def _xsw_wrapping(root: Any) -> None:  # XSW4: the signed assertion inside the evil one
    signed = root.find("saml:Assertion", NS)
    evil = _evil(signed)
    root.replace(signed, evil)
    evil.append(signed)


def _xsw_in_extensions(root: Any) -> None:  # XSW7: the signed assertion moved into an <Extensions>
    signed = root.find("saml:Assertion", NS)
    evil = _evil(signed)
    root.replace(signed, evil)
    extensions = etree.SubElement(root, f"{{{NS['samlp']}}}Extensions")
    root.find("saml:Issuer", NS).addnext(extensions)
    extensions.append(signed)


def _xsw_in_signature_object(root: Any) -> None:  # XSW8: the signed assertion in the evil one's <ds:Object>
    signed = root.find("saml:Assertion", NS)
    evil = _evil(signed)
    signature = copy.deepcopy(signed.find("ds:Signature", NS))
    evil.find("saml:Issuer", NS).addnext(signature)
    holder = etree.SubElement(signature, f"{{{NS['ds']}}}Object")
    root.replace(signed, evil)
    stripped = copy.deepcopy(signed)
    stripped.remove(stripped.find("ds:Signature", NS))
    holder.append(stripped)


def _xsw_same_id(root: Any) -> None:  # the evil assertion after the signed one, reusing its ID
    signed = root.find("saml:Assertion", NS)
    evil = _evil(signed)
    evil.set("ID", signed.get("ID"))
    signed.addnext(evil)


@pytest.mark.parametrize(
    "wrap", [_xsw_sibling_before, _xsw_wrapping, _xsw_in_extensions, _xsw_in_signature_object, _xsw_same_id]
)
def test_signature_wrapping_is_refused(idp: SamlIdp, credentials: SpCredentials, wrap: Callable[[Any], None]) -> None:
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)
    assert refused(sp, edited(saml_response, wrap), request_id) == "saml_wrapped"


def test_a_wrapped_signed_response_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    # XSW1: an evil response carrying the signed original inside its (copied) signature.
    idp.options = IdpOptions(sign_response=True, sign_assertion=False)
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)

    def wrap(root: Any) -> None:
        original = copy.deepcopy(root)
        root.set("ID", "id-evil-response")
        root.find(".//saml:NameID", NS).text = "root"
        signature = root.find("ds:Signature", NS)
        original.remove(original.find("ds:Signature", NS))
        etree.SubElement(signature, f"{{{NS['ds']}}}Object").append(original)

    assert refused(sp, edited(saml_response, wrap), request_id) == "saml_wrapped"


def test_an_assertion_for_another_audience_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def audience(root: Any) -> None:
        root.find(".//saml:Audience", NS).text = "https://other-sp.example.org/metadata"

    assert refused(sp, *sign_in(idp, sp, tamper=audience)) == "saml_audience"


def test_an_assertion_without_an_audience_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    # Profiles §4.1.4.2 (python3-saml alone would accept it).
    sp = service_provider(idp, credentials)

    def no_audience(root: Any) -> None:
        restriction = root.find(".//saml:AudienceRestriction", NS)
        restriction.getparent().remove(restriction)

    assert refused(sp, *sign_in(idp, sp, tamper=no_audience)) == "saml_audience"


def test_an_expired_assertion_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def expired(root: Any) -> None:
        root.find(".//saml:Conditions", NS).set("NotOnOrAfter", instant(-3600))
        root.find(".//saml:SubjectConfirmationData", NS).set("NotOnOrAfter", instant(-3600))

    assert refused(sp, *sign_in(idp, sp, tamper=expired)) == "saml_expired"


def test_the_clock_skew_is_a_minute_not_five(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def stale_conditions(root: Any) -> None:
        root.find(".//saml:Conditions", NS).set("NotOnOrAfter", instant(-120))

    assert refused(sp, *sign_in(idp, sp, tamper=stale_conditions)) == "saml_expired"


def test_an_assertion_not_yet_valid_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def future(root: Any) -> None:
        root.find(".//saml:Conditions", NS).set("NotBefore", instant(600))

    assert refused(sp, *sign_in(idp, sp, tamper=future)) == "saml_expired"


def test_an_answer_to_another_request_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    saml_response, _ = sign_in(idp, sp)
    assert refused(sp, saml_response, "ONELOGIN_another_request") == "saml_in_response_to"


def test_an_unsolicited_answer_is_refused_when_a_request_was_sent(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def unsolicited(root: Any) -> None:
        del root.attrib["InResponseTo"]
        del root.find(".//saml:SubjectConfirmationData", NS).attrib["InResponseTo"]

    saml_response, request_id = sign_in(idp, sp, tamper=unsolicited)
    assert refused(sp, saml_response, request_id) == "saml_in_response_to"
    # Only a caller that sent no request (request_id None) may take it.
    assert sp.complete(saml_response=saml_response, request_id=None).identity.subject == "alice"


def test_a_confirmation_for_another_request_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def other_request(root: Any) -> None:
        root.find(".//saml:SubjectConfirmationData", NS).set("InResponseTo", "ONELOGIN_other")

    assert refused(sp, *sign_in(idp, sp, tamper=other_request)) == "saml_subject_confirmation"


def test_a_recipient_that_only_contains_our_acs_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def recipient(root: Any) -> None:
        root.find(".//saml:SubjectConfirmationData", NS).set("Recipient", f"https://attacker.example/?{ACS}")

    assert refused(sp, *sign_in(idp, sp, tamper=recipient)) == "saml_subject_confirmation"


def test_a_response_for_another_destination_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def destination(root: Any) -> None:
        root.set("Destination", f"{ACS}/elsewhere")  # python3-saml compares by prefix

    assert refused(sp, *sign_in(idp, sp, tamper=destination)) == "saml_destination"


def test_a_response_from_another_issuer_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def issuer(root: Any) -> None:
        for element in root.iter(f"{{{NS['saml']}}}Issuer"):
            element.text = "https://other-idp.example.org"

    assert refused(sp, *sign_in(idp, sp, tamper=issuer)) == "saml_issuer"


def test_a_transient_name_id_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)

    def transient(root: Any) -> None:
        root.find(".//saml:NameID", NS).set("Format", "urn:oasis:names:tc:SAML:2.0:nameid-format:transient")

    assert refused(sp, *sign_in(idp, sp, tamper=transient)) == "saml_name_id"


def test_a_clear_assertion_is_refused_when_encryption_is_required(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials, want_assertions_encrypted=True)
    assert refused(sp, *sign_in(idp, sp)) == "saml_unencrypted"


def test_an_assertion_encrypted_for_another_key_is_refused(idp: SamlIdp, credentials: SpCredentials) -> None:
    idp.options = IdpOptions(encrypt_assertion=True)
    sp = service_provider(idp, credentials)
    saml_response, request_id = sign_in(idp, sp)
    stranger = service_provider(idp, generate_sp_credentials("another SP"))
    assert refused(stranger, saml_response, request_id) == "saml_decryption"


# -- metadata ---------------------------------------------------------------------------------------------------------


def test_our_metadata_describes_the_sp(idp: SamlIdp, credentials: SpCredentials) -> None:
    root = etree.fromstring(service_provider(idp, credentials).metadata().encode())
    md = {"md": "urn:oasis:names:tc:SAML:2.0:metadata"}
    assert root.get("entityID") == ENTITY_ID
    acs = root.find(".//md:AssertionConsumerService", md)
    assert acs.get("Location") == ACS
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    uses = {key.get("use") for key in root.iterfind(".//md:KeyDescriptor", md)}
    assert uses == {"signing", "encryption"}
    body = "".join(credentials.certificate.strip().splitlines()[1:-1])
    assert all(cert.text == body for cert in root.iterfind(".//ds:X509Certificate", NS))


def test_the_authn_request_is_signed_and_carries_the_relay_state(idp: SamlIdp, credentials: SpCredentials) -> None:
    from urllib.parse import parse_qs, urlsplit

    url, request_id = service_provider(idp, credentials).redirect_url(relay_state="relay-2")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == idp.sso_url
    assert query["RelayState"] == ["relay-2"]
    assert query["SigAlg"] == ["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"]
    assert query["Signature"]
    assert request_id.startswith("ONELOGIN_")


async def test_idp_metadata_is_imported_from_its_url(idp: SamlIdp) -> None:
    fields = parse_idp_metadata(await fetch_idp_metadata(idp.entity_id))
    assert fields["idp_entity_id"] == idp.entity_id
    assert fields["sso_url"] == idp.sso_url
    body = "".join(idp.certificate.strip().splitlines()[1:-1])
    assert body in fields["certificates"]
    SamlProviderConfig(kind="saml", **fields)  # what `sso add saml --metadata` stores is a valid provider


async def test_idp_metadata_over_plain_http_off_loopback_is_refused() -> None:
    with pytest.raises(MetadataError, match="https"):
        await fetch_idp_metadata("http://idp.example.org/metadata")


def test_idp_metadata_selects_the_entity_asked_for(idp: SamlIdp) -> None:
    with pytest.raises(MetadataError, match="no identity provider"):
        parse_idp_metadata(idp.metadata(), entity_id="https://other-idp.example.org")


def test_sp_metadata_is_not_idp_metadata(idp: SamlIdp, credentials: SpCredentials) -> None:
    with pytest.raises(MetadataError, match="no identity provider"):
        parse_idp_metadata(service_provider(idp, credentials).metadata())


def test_idp_metadata_path_is_not_a_local_file_reader(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    xxe = f'<!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]><x>&e;</x>'
    with pytest.raises(MetadataError, match="well-formed") as caught:
        parse_idp_metadata(xxe)
    assert "top secret" not in str(caught.value)


async def test_the_idp_answers_a_browser_with_a_form_to_our_acs(idp: SamlIdp, credentials: SpCredentials) -> None:
    sp = service_provider(idp, credentials)
    url, request_id = sp.redirect_url(relay_state="relay-3")
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(f"{url}&user=bob")  # as the IdP's login form would add it
    assert page.status_code == 200
    assert f'action="{ACS}"' in page.text
    saml_response, relay_state = form_fields(page.text)
    assert relay_state == "relay-3"
    assert sp.complete(saml_response=saml_response, request_id=request_id).identity.subject == "bob"
