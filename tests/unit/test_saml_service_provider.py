"""Whatever arrives as a SAMLResponse, the service provider answers with SignInRefused, never another exception; and
IdP metadata that cannot be used says why."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chamberlain.sso.identity import SignInRefused
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.sso.saml.metadata import MetadataError, parse_idp_metadata
from chamberlain.sso.saml.service_provider import SamlServiceProvider
from chamberlain.sso.saml.sp_credentials import generate_sp_credentials
from tests.support.saml_idp import other_signer

SP = SamlServiceProvider(
    "corp",
    SamlProviderConfig(
        idp_entity_id="https://idp.example.org/metadata",
        sso_url="https://idp.example.org/sso",
        certificates=(other_signer("idp")[1],),
    ),
    entity_id="https://chamberlain.example.org/sso/corp/metadata",
    acs_url="https://chamberlain.example.org/sso/corp/acs",
    credentials=generate_sp_credentials("unit test SP"),
)
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion"
FRAGMENTS = [
    f'<samlp:Response xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="r" Version="2.0"'
    ' IssueInstant="2026-01-01T00:00:00Z">',
    "</samlp:Response>",
    '<saml:Assertion ID="a" Version="2.0" IssueInstant="2026-01-01T00:00:00Z">',
    "</saml:Assertion>",
    "<saml:Issuer>https://idp.example.org/metadata</saml:Issuer>",
    f'<samlp:Status><samlp:StatusCode Value="{PROTOCOL.replace("protocol", "status")}:Success"/></samlp:Status>',
    '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>',
    "<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc='http://www.w3.org/2001/04/xmlenc#'/></saml:EncryptedAssertion>",
    "<saml:Subject><saml:NameID>alice</saml:NameID></saml:Subject>",
    '<!DOCTYPE r [<!ENTITY e "x">]>',
    "&e;",
    "<",
    "\x00",
]


def _joined(parts: list[str]) -> bytes:
    return "".join(parts).encode()


def _refused_only(saml_response: str) -> None:
    with pytest.raises(SignInRefused) as caught:
        SP.complete(saml_response=saml_response, request_id="ONELOGIN_x")
    assert caught.value.reason.startswith("saml_")
    assert "<" not in caught.value.message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_is_refused(value: str) -> None:
    _refused_only(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=500),
        st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(lambda parts: "".join(parts).encode()),
    )
)
def test_any_document_is_refused(document: bytes) -> None:
    _refused_only(base64.b64encode(document).decode())


def test_an_entity_expansion_is_malformed() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><r>&b;</r>'
    with pytest.raises(SignInRefused, match="malformed"):
        SP.complete(saml_response=base64.b64encode(bomb.encode()).decode(), request_id=None)


def test_an_oversized_response_is_refused_unread() -> None:
    with pytest.raises(SignInRefused) as caught:
        SP.complete(saml_response="A" * (1024 * 1024), request_id=None)
    assert caught.value.reason == "saml_malformed"


@pytest.mark.parametrize("document", ["", "not xml", "<md:EntityDescriptor", "<?xml version='1.0'?><a/>"])
def test_unusable_idp_metadata_says_why(document: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_idp_metadata(document)
    assert str(caught.value).startswith(("the metadata", "the identity provider"))


def test_idp_metadata_without_a_redirect_endpoint_is_refused() -> None:
    certificate = "".join(other_signer("idp")[1].strip().splitlines()[1:-1])
    document = f"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
        xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.org/metadata">
      <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
        <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{certificate}</ds:X509Certificate>
        </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
        <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
          Location="https://idp.example.org/sso"/>
      </md:IDPSSODescriptor>
    </md:EntityDescriptor>"""
    with pytest.raises(MetadataError, match="HTTP-Redirect"):
        parse_idp_metadata(document)
    redirect = document.replace("bindings:HTTP-POST", "bindings:HTTP-Redirect")
    assert parse_idp_metadata(redirect) == {
        "idp_entity_id": "https://idp.example.org/metadata",
        "sso_url": "https://idp.example.org/sso",
        "certificates": [certificate],
    }
