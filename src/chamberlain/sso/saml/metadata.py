"""SAML metadata (SAML Metadata 2.0): importing an IdP's, for `chamberlain sso add saml --metadata FILE|URL`.

Our own SP metadata is SamlServiceProvider.metadata(). An IdP's is parsed by python3-saml's parser (which refuses
DTDs and entities) into the fields of a SamlProviderConfig: its entityID, its HTTP-Redirect SingleSignOnService and
its signing certificates (§2.4.1.1 KeyDescriptor use="signing", or without `use`).
"""

from __future__ import annotations

from typing import Any

import httpx
from onelogin.saml2.constants import OneLogin_Saml2_Constants as Constants
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from pydantic import TypeAdapter, ValidationError

from chamberlain.sso.common_config import https_url

MAX_METADATA_BYTES = 1024 * 1024  # federation aggregates are larger; a single IdP's metadata is a few kilobytes
FETCH_TIMEOUT = 10.0


class MetadataError(ValueError):
    """The metadata cannot be used; the message says why (it quotes nothing of the document)."""


def parse_idp_metadata(xml: str, *, entity_id: str | None = None) -> dict[str, Any]:
    """The SamlProviderConfig fields (idp_entity_id, sso_url, certificates) of the IdP in `xml`; `entity_id` picks
    one when the document describes several."""
    if len(xml.encode()) > MAX_METADATA_BYTES:
        raise MetadataError(f"the metadata is larger than {MAX_METADATA_BYTES // 1024} KiB")
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(
            xml, required_sso_binding=Constants.BINDING_HTTP_REDIRECT, entity_id=entity_id
        )
    except Exception:  # lxml, DTD refusal, anything else the document causes
        raise MetadataError("the metadata is not a well-formed SAML metadata document") from None
    idp = parsed.get("idp") or {}
    if not idp.get("entityId"):
        raise MetadataError(
            "the metadata has no identity provider (IDPSSODescriptor)"
            + (f" with entityID {entity_id!r}" if entity_id else "")
        )
    sso_url = (idp.get("singleSignOnService") or {}).get("url")
    if not sso_url:
        raise MetadataError("the identity provider has no SingleSignOnService with the HTTP-Redirect binding")
    certificates = list((idp.get("x509certMulti") or {}).get("signing") or [])
    if not certificates and idp.get("x509cert"):
        certificates = [idp["x509cert"]]
    if not certificates:
        raise MetadataError("the identity provider publishes no signing certificate")
    return {"idp_entity_id": idp["entityId"], "sso_url": sso_url, "certificates": certificates}


async def fetch_idp_metadata(url: str) -> str:
    """The metadata document at `url` (https; http only on loopback), at most MAX_METADATA_BYTES, within
    FETCH_TIMEOUT seconds."""
    try:
        TypeAdapter(https_url).validate_python(url)
    except ValidationError:
        raise MetadataError("the metadata URL must be https (plain http only on loopback)") from None
    try:
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/samlmetadata+xml, application/xml"}) as answer,
        ):
            if answer.status_code != 200:
                raise MetadataError(f"the metadata URL answered HTTP {answer.status_code}")
            body = bytearray()
            async for chunk in answer.aiter_bytes():
                body += chunk
                if len(body) > MAX_METADATA_BYTES:
                    raise MetadataError(f"the metadata is larger than {MAX_METADATA_BYTES // 1024} KiB")
    except httpx.HTTPError as problem:
        raise MetadataError(f"the metadata URL could not be read ({type(problem).__name__})") from None
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise MetadataError("the metadata is not UTF-8 text") from None
