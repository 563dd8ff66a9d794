"""`chamberlain serve` over TLS and mutual TLS (transport/tls.py), on loopback with real handshakes."""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chamberlain.transport.settings import TlsSettings
from chamberlain.transport.tls import (
    ServerTls,
    certificate_thumbprint,
    client_certificate,
    client_certificate_thumbprint,
)
from tests.support.certificates import Authority, Leaf
from tests.support.server import free_port
from tests.support.tls import client_context, raw_get, refused, serving_tls


class Served:
    count = 0


SERVED = Served()


async def whoami(request: Request) -> JSONResponse:
    SERVED.count += 1
    certificate = client_certificate(request.scope)
    tls = request.scope["extensions"]["tls"]
    return JSONResponse(
        {
            "subject": None if certificate is None else certificate.subject.rfc4514_string(),
            "thumbprint": client_certificate_thumbprint(request.scope),
            "tls_version": tls["tls_version"],
            "name": tls["client_cert_name"],
        }
    )


APP = Starlette(routes=[Route("/", whoami)])


@dataclass
class Deployment:
    directory: Path
    authority: Authority
    server: Leaf
    client: Leaf
    port: int
    tls: ServerTls

    @property
    def served(self) -> int:
        return SERVED.count

    def get(self, certificate: Leaf | None, context: ssl.SSLContext | None = None) -> dict[str, Any]:
        response = raw_get(self.port, context or client_context(self.authority, certificate))
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        document: dict[str, Any] = json.loads(body)
        return document


def deploy(
    tmp_path: Path, authority: Authority | None = None, **options: Any
) -> tuple[Authority, Leaf, Leaf, TlsSettings]:
    authority = authority or Authority.new()
    server, client = authority.issue("127.0.0.1", server=True), authority.issue("alice-laptop")
    certificate, key = server.write(tmp_path, "server")
    authority_file, _ = authority.write(tmp_path, "ca")
    settings = TlsSettings(certificate=certificate, private_key=key, client_ca=authority_file, **options)
    return authority, server, client, settings


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[Deployment]:
    authority, server, client, settings = deploy(tmp_path, reload_interval=0.01)
    tls, port = ServerTls(settings), free_port()
    SERVED.count = 0
    with serving_tls(APP, port, tls):
        yield Deployment(tmp_path, authority, server, client, port, tls)


def test_a_client_with_a_certificate_of_the_ca_is_served_and_the_app_sees_it(mtls: Deployment) -> None:
    seen = mtls.get(mtls.client)
    assert seen["subject"] == "CN=alice-laptop,O=Chamberlain Tests"
    assert seen["name"] == seen["subject"]
    assert seen["thumbprint"] == certificate_thumbprint(mtls.client.der)
    assert seen["tls_version"] in (0x0303, 0x0304)


def test_a_client_without_a_certificate_is_refused_at_the_handshake(mtls: Deployment) -> None:
    assert refused(mtls.port, client_context(mtls.authority))
    assert mtls.served == 0


def test_a_certificate_from_another_ca_is_refused(mtls: Deployment) -> None:
    stranger = Authority.new("Somebody Else's CA").issue("alice-laptop")
    assert refused(mtls.port, client_context(mtls.authority, stranger))
    assert mtls.served == 0


def test_a_self_signed_client_certificate_is_refused(mtls: Deployment) -> None:
    self_signed = mtls.authority.issue("alice-laptop", self_signed=True)
    assert refused(mtls.port, client_context(mtls.authority, self_signed))
    assert mtls.served == 0


def test_the_client_must_trust_the_server_certificate(mtls: Deployment) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_get(mtls.port, client_context(Authority.new("Not the server's CA"), mtls.client))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(mtls: Deployment) -> None:
    context = client_context(mtls.authority, mtls.client)
    context.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    assert refused(mtls.port, context)
    assert mtls.served == 0


def test_tls_1_2_without_forward_secrecy_is_refused(mtls: Deployment) -> None:
    context = client_context(mtls.authority, mtls.client)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-GCM-SHA256:AES256-SHA")  # RSA key exchange only
    assert refused(mtls.port, context)
    context.set_ciphers("ECDHE+AESGCM")
    assert mtls.get(mtls.client, context)["tls_version"] == 0x0303


@pytest.mark.parametrize("encoding", ["hex", "base64url"])
def test_a_client_whose_key_is_not_pinned_is_closed_before_any_http_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    authority = Authority.new()
    pinned = authority.issue("pinned-laptop")
    pin = pinned.spki_sha256.hex() if encoding == "hex" else base64.urlsafe_b64encode(pinned.spki_sha256).decode()
    _, _, client, settings = deploy(tmp_path, authority, pinned_client_spki=(pin,))
    port = free_port()
    SERVED.count = 0
    with serving_tls(APP, port, ServerTls(settings)), caplog.at_level(logging.WARNING, "chamberlain.transport.tls"):
        # The handshake succeeds (the CA vouches for the certificate); the gate closes the connection unread.
        assert raw_get(port, client_context(authority, client)) == b""
        assert SERVED.count == 0
        response = raw_get(port, client_context(authority, pinned))
    assert response.startswith(b"HTTP/1.1 200")
    [refusal] = [record.getMessage() for record in caplog.records if "not pinned" in record.getMessage()]
    assert refusal.startswith("TLS connection refused: client certificate key")


def test_new_certificates_are_used_without_a_restart(mtls: Deployment) -> None:
    before = mtls.get(mtls.client)
    assert before["subject"] == "CN=alice-laptop,O=Chamberlain Tests"
    # A new CA replaces the old one for both the server certificate and client certificates.
    successor = Authority.new("Chamberlain Test CA 2")
    server = successor.issue("127.0.0.1", server=True)
    client = successor.issue("bob-laptop")
    _replace(mtls.directory / "server.crt", server.certificate_pem)
    _replace(mtls.directory / "server.key", server.key_pem)
    _replace(mtls.directory / "ca.crt", successor.certificate_pem)
    assert mtls.tls.reload()
    seen = raw_get(mtls.port, client_context(successor, client))
    assert b'"subject":"CN=bob-laptop,O=Chamberlain Tests"' in seen
    # The old CA's client certificate and server certificate are gone with the old files.
    assert refused(mtls.port, client_context(successor, mtls.client))
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_get(mtls.port, client_context(mtls.authority, mtls.client))


def test_files_that_do_not_load_leave_the_previous_certificates_in_use(
    mtls: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    other = Authority.new("Other").issue("127.0.0.1", server=True)
    _replace(mtls.directory / "server.key", other.key_pem)  # no longer the certificate's key
    with caplog.at_level(logging.ERROR, "chamberlain.transport.tls"):
        assert not mtls.tls.reload()
    assert "is not the key of the certificate" in caplog.text
    assert mtls.get(mtls.client)["subject"] == "CN=alice-laptop,O=Chamberlain Tests"


def _replace(path: Path, content: bytes) -> None:
    """As a deployment tool would: a new file renamed over the old one."""
    staged = path.with_suffix(".new")
    staged.write_bytes(content)
    os.replace(staged, path)
