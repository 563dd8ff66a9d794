"""The `tls:` section and the server context it builds (transport/settings.py, transport/tls.py)."""

from __future__ import annotations

import base64
import logging
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from chamberlain.cli.serve import with_tls_options
from chamberlain.settings import load_settings
from chamberlain.transport.settings import TlsSettings, parse_spki_pin
from chamberlain.transport.tls import TLS12_CIPHERS, TlsConfigurationError, build_server_context
from tests.support.certificates import Authority

DIGEST = bytes(range(32))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    authority = Authority.new()
    certificate, key = authority.issue("127.0.0.1", server=True).write(tmp_path, "server")
    ca, _ = authority.write(tmp_path, "ca")
    return {"certificate": certificate, "private_key": key, "client_ca": ca}


@pytest.mark.parametrize(
    "written",
    [
        DIGEST.hex(),
        DIGEST.hex().upper(),
        base64.urlsafe_b64encode(DIGEST).decode(),
        base64.urlsafe_b64encode(DIGEST).decode().rstrip("="),
        base64.b64encode(DIGEST).decode(),
    ],
)
def test_pins_are_sha256_digests_in_hex_or_base64(written: str) -> None:
    assert parse_spki_pin(written) == DIGEST


@pytest.mark.parametrize("written", ["", "abc", DIGEST.hex()[:-2], base64.b64encode(DIGEST[:20]).decode(), "zz" * 32])
def test_anything_else_is_not_a_pin(written: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        parse_spki_pin(written)


def test_client_certificates_are_required_once_a_client_ca_is_given(files: dict[str, Path]) -> None:
    assert TlsSettings().enabled is False
    server_only = TlsSettings(certificate=files["certificate"], private_key=files["private_key"])
    assert server_only.client_certificate_mode == "none"
    assert TlsSettings(**files).client_certificate_mode == "required"
    assert TlsSettings(**files, client_certificates="optional").client_certificate_mode == "optional"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"certificate": "server.crt"}, "go together"),
        ({"client_ca": "ca.crt"}, "need tls.certificate"),
        ({"certificate": "c", "private_key": "k", "client_certificates": "required"}, "needs tls.client_ca"),
        (
            {
                "certificate": "c",
                "private_key": "k",
                "client_ca": "ca",
                "client_certificates": "optional",
                "pinned_client_spki": [DIGEST.hex()],
            },
            "needs client certificates to be required",
        ),
        ({"certificate": "c", "private_key": "k", "client_ca": "ca", "pinned_client_spki": ["nope"]}, "SHA-256"),
        ({"certificate": "c", "private_key": "k", "reload_interval": -1}, "greater than or equal"),
        ({"certificate": "c", "private_key": "k", "cipher": "RC4"}, "Extra inputs"),
    ],
)
def test_inconsistent_sections_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TlsSettings.model_validate(values)


def test_the_context_is_hardened(files: dict[str, Path]) -> None:
    context = build_server_context(TlsSettings(**files))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [cipher for cipher in context.get_ciphers() if cipher["protocol"] == "TLSv1.2"]
    assert tls12, TLS12_CIPHERS
    # Forward secrecy and AEAD only: ECDHE key exchange, GCM or ChaCha20-Poly1305.
    assert all(cipher["kea"] == "kx-ecdhe" and cipher["aead"] for cipher in tls12)


def test_errors_name_the_setting_and_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.crt"
    with pytest.raises(TlsConfigurationError, match=f"tls.certificate: cannot read {missing}"):
        build_server_context(TlsSettings(certificate=missing, private_key=files["private_key"]))
    _, other_key = Authority.new().issue("127.0.0.1", server=True).write(tmp_path / "other", "server")
    with pytest.raises(TlsConfigurationError, match=f"tls.private_key: {other_key} is not the key of the certificate"):
        build_server_context(TlsSettings(certificate=files["certificate"], private_key=other_key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigurationError, match=f"tls.client_ca: {garbage} holds no usable PEM"):
        build_server_context(TlsSettings(**{**files, "client_ca": garbage}))
    with pytest.raises(TlsConfigurationError, match="is not a PEM certificate chain"):
        build_server_context(TlsSettings(certificate=garbage, private_key=files["private_key"]))


def test_an_expired_certificate_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    certificate, key = Authority.new().issue("127.0.0.1", server=True, expired=True).write(tmp_path, "old")
    with caplog.at_level(logging.WARNING, "chamberlain.transport.tls"):
        build_server_context(TlsSettings(certificate=certificate, private_key=key))
    assert f"tls.certificate: the certificate in {certificate} expired on" in caplog.text


def test_serve_options_override_the_section_and_make_the_issuer_https(files: dict[str, Path], tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, overrides={"port": 8443}, environ={})
    assert settings.tls.enabled is False
    assert settings.public_url == "http://127.0.0.1:8443"
    served = with_tls_options(
        settings, certificate=files["certificate"], private_key=files["private_key"], client_ca=None
    )
    assert served.tls.certificate == files["certificate"]
    assert served.tls.client_certificate_mode == "none"
    assert served.public_url == "https://127.0.0.1:8443"
    unchanged = with_tls_options(settings, certificate=None, private_key=None, client_ca=None)
    assert unchanged.tls == settings.tls
    assert unchanged.public_url == settings.public_url


def test_the_tls_section_is_read_from_chamberlain_yaml(files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "chamberlain.yaml"
    config.write_text(
        f"tls:\n  certificate: {files['certificate']}\n  private_key: {files['private_key']}\n"
        f"  client_ca: {files['client_ca']}\n  pinned_client_spki: ['{DIGEST.hex()}']\n"
    )
    settings = load_settings(data_dir=tmp_path, config_file=config, environ={})
    assert settings.tls.pins == frozenset({DIGEST})
    assert settings.tls.client_certificate_mode == "required"
