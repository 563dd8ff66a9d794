"""A real SAML 2.0 identity provider for the SSO tests, on 127.0.0.1: pysaml2's `saml2.server.Server`, signing and
encrypting with Debian's xmlsec1, with its own key and certificate made here.

    with running_saml_idp(tmp_path) as idp:
        idp.entity_id, idp.sso_url, idp.certificate    # what our SP needs (sso_url: HTTP-Redirect binding)
        idp.provider_config(domains=["example.com"])   # an `sso.providers.NAME` entry (kind: saml)
        idp.metadata()                                 # its IdP metadata XML (for `sso add saml --metadata`)
        idp.trust(sp_metadata_xml)                     # the SP it answers (our /sso/NAME/metadata); before signing in
        saml_response, relay_state = idp.answer(redirect_url, "alice")   # in process: the POST our ACS gets
        # or over HTTP, as a browser: GET redirect_url + "&user=alice" answers with an auto-submitting form
        saml_response, relay_state = form_fields(html)  # ... whose SAMLResponse and RelayState the test posts

Users (USERS unless `users=` is given) are keyed by name, which is their persistent NameID, with `email`,
`displayName`, `groups` and `authn_context` (AuthnContextClassRef): "alice" proves MFA (REFEDS MFA), "bob" does not
(PasswordProtectedTransport).

`idp.options` (an IdpOptions; replace it between answers) decides how answers are made: `sign_response`,
`sign_assertion`, `encrypt_assertion` (to the SP's encryption certificate from its metadata) and `authn_context`
(overrides the user's). `answer(..., tamper=fn, signer=...)` builds the response unsigned, lets `fn` change the
document (an lxml element: the <samlp:Response>), then signs its assertion with the IdP's key, or with
`signer=(key_pem, cert_pem)`, through xmlsec: for expired, wrong-audience and similar documents a real IdP never
sends. `other_signer()` makes such a key pair.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml
from saml2.config import IdPConfig
from saml2.server import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from chamberlain.sso.saml.sp_credentials import generate_sp_credentials
from tests.support.server import free_port, serving

REFEDS_MFA = "https://refeds.org/profile/mfa"
PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@example.com",
        "displayName": "Alice Example",
        "groups": ["engineering", "admins"],
        "authn_context": REFEDS_MFA,
    },
    "bob": {"email": "bob@example.com", "displayName": "Bob Example", "groups": ["sales"], "authn_context": PASSWORD},
}
ASSERTION = "{urn:oasis:names:tc:SAML:2.0:assertion}Assertion"


@dataclass
class IdpOptions:
    sign_response: bool = False
    sign_assertion: bool = True
    encrypt_assertion: bool = False
    authn_context: str | None = None


def other_signer(common_name: str = "not the IdP") -> tuple[str, str]:
    """A key pair (PEM key, PEM certificate) that is not the IdP's."""
    credentials = generate_sp_credentials(common_name)  # a self-signed RSA key pair, as our SP makes its own
    return credentials.private_key, credentials.certificate


@dataclass
class SamlIdp:
    base_url: str
    directory: Path
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: USERS)
    options: IdpOptions = field(default_factory=IdpOptions)

    def __post_init__(self) -> None:
        self.key, self.certificate = other_signer("Chamberlain test SAML IdP")
        (self.directory / "idp.key").write_text(self.key)
        (self.directory / "idp.crt").write_text(self.certificate)
        self._sp_metadata: list[str] = []
        self._server = self._build()

    @property
    def entity_id(self) -> str:
        return f"{self.base_url}/metadata"

    @property
    def sso_url(self) -> str:
        return f"{self.base_url}/sso"

    def provider_config(self, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "saml",
            "idp_entity_id": self.entity_id,
            "sso_url": self.sso_url,
            "certificates": [self.certificate],
            **extra,
        }

    def metadata(self) -> str:
        from saml2.metadata import entity_descriptor

        return str(entity_descriptor(self._server.config))

    def trust(self, sp_metadata: str) -> None:
        """Answers the SP this metadata describes (pysaml2 learns its ACS and encryption certificate from it)."""
        self._sp_metadata.append(sp_metadata)
        self._server = self._build()

    def answer(
        self,
        redirect_url: str,
        user: str,
        *,
        tamper: Callable[[Any], None] | None = None,
        signer: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """The SAMLResponse (base64) and RelayState the IdP posts to the SP for the AuthnRequest in `redirect_url`."""
        query = {name: values[0] for name, values in parse_qs(urlsplit(redirect_url).query).items()}
        request = self._server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)
        message = request.message
        sp_entity_id = message.issuer.text
        acs = message.assertion_consumer_service_url
        if acs is None:
            acs = self._server.config.metadata.assertion_consumer_service(sp_entity_id, binding=BINDING_HTTP_POST)[0][
                "location"
            ]
        crafted = tamper is not None or signer is not None
        profile = self.users[user]
        options = self.options
        response = self._server.create_authn_response(
            identity={name: _values(profile[name]) for name in ("email", "displayName", "groups")},
            in_response_to=message.id,
            destination=acs,
            sp_entity_id=sp_entity_id,
            name_id=saml.NameID(format=saml.NAMEID_FORMAT_PERSISTENT, text=user),
            authn={"class_ref": options.authn_context or profile["authn_context"], "authn_auth": self.entity_id},
            sign_response=options.sign_response and not crafted,
            sign_assertion=options.sign_assertion and not crafted,
            encrypt_assertion=options.encrypt_assertion and not crafted,
            # pysaml2's self-contained mode renames namespace prefixes after signing, which breaks the signature.
            encrypt_assertion_self_contained=False,
        )
        document = str(response)
        if crafted:
            document = self._crafted(document, tamper, signer or (self.key, self.certificate))
        return base64.b64encode(document.encode()).decode(), query.get("RelayState", "")

    def _crafted(self, document: str, tamper: Callable[[Any], None] | None, signer: tuple[str, str]) -> str:
        root = etree.fromstring(document.encode())
        if tamper is not None:
            tamper(root)
        assertion = root.find(ASSERTION)
        if assertion is not None:
            signed = OneLogin_Saml2_Utils.add_sign(
                etree.tostring(assertion),
                signer[0],
                signer[1],
                sign_algorithm=OneLogin_Saml2_Constants.RSA_SHA256,
                digest_algorithm=OneLogin_Saml2_Constants.SHA256,
            )
            root.replace(assertion, etree.fromstring(signed))
        return etree.tostring(root).decode()

    def _build(self) -> Server:
        metadata_files = []
        for index, xml in enumerate(self._sp_metadata):
            path = self.directory / f"sp-{index}.xml"
            path.write_text(xml)
            metadata_files.append(str(path))
        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "xmlsec_binary": "/usr/bin/xmlsec1",
                "crypto_backend": "xmlsec1",
                "key_file": str(self.directory / "idp.key"),
                "cert_file": str(self.directory / "idp.crt"),
                "encryption_keypairs": [
                    {"key_file": str(self.directory / "idp.key"), "cert_file": str(self.directory / "idp.crt")}
                ],
                "metadata": {"local": metadata_files},
                "service": {
                    "idp": {
                        "endpoints": {"single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)]},
                        "name_id_format": [saml.NAMEID_FORMAT_PERSISTENT],
                        "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                        "signing_algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                        "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
                    }
                },
            }
        )
        return Server(config=config)

    def app(self) -> Starlette:
        async def sso(request: Request) -> Response:
            user = request.query_params.get("user", "")
            if user not in self.users:
                return PlainTextResponse("unknown user: add ?user=NAME", status_code=400)
            if "SAMLRequest" not in request.query_params:
                return PlainTextResponse("no SAMLRequest (HTTP-Redirect binding)", status_code=400)
            saml_response, relay_state = self.answer(str(request.url), user)
            destination = self._destination(saml_response)
            return HTMLResponse(
                '<html><body onload="document.forms[0].submit()">'
                f'<form method="post" action="{html.escape(destination)}">'
                f'<input type="hidden" name="SAMLResponse" value="{html.escape(saml_response)}">'
                f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">'
                "</form></body></html>"
            )

        async def metadata(request: Request) -> Response:
            return Response(self.metadata(), media_type="application/samlmetadata+xml")

        return Starlette(routes=[Route("/sso", sso), Route("/metadata", metadata)])

    @staticmethod
    def _destination(saml_response: str) -> str:
        return str(etree.fromstring(base64.b64decode(saml_response)).get("Destination"))


def form_fields(page: str) -> tuple[str, str]:
    """SAMLResponse and RelayState from the IdP's auto-submitting form."""
    found = dict(re.findall(r'name="(SAMLResponse|RelayState)" value="([^"]*)"', page))
    return html.unescape(found["SAMLResponse"]), html.unescape(found.get("RelayState", ""))


def _values(value: Any) -> list[str]:
    return list(value) if isinstance(value, list | tuple) else [str(value)]


@contextlib.contextmanager
def running_saml_idp(directory: Path, *, users: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[SamlIdp]:
    """Runs the IdP with uvicorn in a thread of its own until the block ends."""
    port = free_port()
    idp = SamlIdp(f"http://127.0.0.1:{port}", directory, users or USERS)
    with serving(idp.app(), port, name="saml-idp"):
        yield idp
