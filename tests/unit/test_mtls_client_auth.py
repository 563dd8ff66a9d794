"""RFC 8705 client metadata (§2.1.2, §2.2.2, §3.4) and how a certificate is matched to a registered client."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from joserfc.jwk import ECKey, KeySet

from chamberlain.oauth.client_auth import certificate_in_key_set, certificate_matches
from chamberlain.oauth.client_metadata import parse_client_metadata
from chamberlain.oauth.errors import OAuthError
from tests.support.certificates import Authority, Leaf

CC = {"grant_types": ["client_credentials"], "redirect_uris": []}


def with_names(leaf: Leaf, *names: x509.GeneralName) -> x509.Certificate:
    """The leaf re-issued with these subject alternative names."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.certificate.subject)
        .issuer_name(leaf.certificate.subject)
        .public_key(leaf.key.public_key())
        .serial_number(1)
        .not_valid_before(leaf.certificate.not_valid_before_utc)
        .not_valid_after(leaf.certificate.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    )
    return builder.sign(leaf.key, hashes.SHA256())


def test_tls_client_auth_needs_exactly_one_certificate_name() -> None:
    metadata = parse_client_metadata(
        {"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "2.5.4.3=robot,O=Acme", **CC}
    )
    # Stored as cryptography writes RFC 4514 (CN for 2.5.4.3), so spelling variants of one name compare equal.
    assert metadata.tls_client_auth_name == ("tls_client_auth_subject_dn", "CN=robot,O=Acme")
    assert metadata.certificate_bound
    assert not metadata.is_public
    assert parse_client_metadata(metadata.to_dict()) == metadata
    for wrong in (
        {},
        {"tls_client_auth_san_dns": "robot.test", "tls_client_auth_san_uri": "spiffe://acme/robot"},
        {"tls_client_auth_subject_dn": "this is no DN"},
    ):
        with pytest.raises(OAuthError) as refused:
            parse_client_metadata({"token_endpoint_auth_method": "tls_client_auth", **wrong, **CC})
        assert refused.value.error == "invalid_client_metadata"


def test_certificate_names_belong_to_tls_client_auth_only() -> None:
    with pytest.raises(OAuthError, match="only for token_endpoint_auth_method tls_client_auth"):
        parse_client_metadata(
            {
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": "https://a.test/j",
                "tls_client_auth_san_dns": "robot.test",
                **CC,
            }
        )


def test_self_signed_tls_client_auth_needs_registered_keys() -> None:
    with pytest.raises(OAuthError, match="self_signed_tls_client_auth requires jwks or jwks_uri"):
        parse_client_metadata({"token_endpoint_auth_method": "self_signed_tls_client_auth", **CC})


def test_bound_tokens_can_be_asked_for_by_any_client_and_must_be_a_boolean() -> None:
    public = parse_client_metadata(
        {
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
            "tls_client_certificate_bound_access_tokens": True,
        }
    )
    assert public.certificate_bound
    assert public.to_dict()["tls_client_certificate_bound_access_tokens"] is True
    plain = parse_client_metadata({"redirect_uris": ["http://127.0.0.1:1/cb"]})
    assert not plain.certificate_bound
    assert "tls_client_certificate_bound_access_tokens" not in plain.to_dict()
    with pytest.raises(OAuthError, match="must be a boolean"):
        parse_client_metadata(
            {"redirect_uris": ["http://127.0.0.1:1/cb"], "tls_client_certificate_bound_access_tokens": "yes"}
        )


def test_a_certificate_matches_by_subject_dn_or_one_san_of_the_registered_type() -> None:
    leaf = Authority.new().issue("robot")
    assert certificate_matches(leaf.certificate, "tls_client_auth_subject_dn", "CN=robot,O=Chamberlain Tests")
    assert not certificate_matches(leaf.certificate, "tls_client_auth_subject_dn", "CN=robot2,O=Chamberlain Tests")
    named = with_names(
        leaf,
        x509.DNSName("robot.acme.test"),
        x509.UniformResourceIdentifier("spiffe://acme.test/robot"),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.RFC822Name("robot@acme.test"),
    )
    assert certificate_matches(named, "tls_client_auth_san_dns", "robot.acme.test")
    assert certificate_matches(named, "tls_client_auth_san_uri", "spiffe://acme.test/robot")
    assert certificate_matches(named, "tls_client_auth_san_ip", "0:0::1")  # compared as addresses
    assert certificate_matches(named, "tls_client_auth_san_email", "robot@acme.test")
    # A value of another type never matches: a DNS name is not accepted where a URI was registered.
    assert not certificate_matches(named, "tls_client_auth_san_uri", "robot.acme.test")
    assert not certificate_matches(named, "tls_client_auth_san_dns", "evil.acme.test")
    assert not certificate_matches(named, "tls_client_auth_san_ip", "not an address")
    assert not certificate_matches(leaf.certificate, "tls_client_auth_san_dns", "robot.acme.test")  # no SAN at all


def test_a_self_signed_certificate_is_found_by_x5c_or_by_its_public_key() -> None:
    authority = Authority.new()
    robot, other = authority.issue("robot", self_signed=True), authority.issue("other", self_signed=True)
    by_key = ECKey.import_key(robot.key.public_key()).as_dict(private=False)
    by_x5c = {
        **ECKey.import_key(other.key.public_key()).as_dict(private=False),
        "x5c": [base64.b64encode(robot.der).decode()],
    }
    assert certificate_in_key_set(robot.certificate, robot.der, KeySet.import_key_set({"keys": [by_key]}))
    assert certificate_in_key_set(robot.certificate, robot.der, KeySet.import_key_set({"keys": [by_x5c]}))
    # The x5c names robot's certificate: other's certificate is not accepted for its key alone.
    assert not certificate_in_key_set(other.certificate, other.der, KeySet.import_key_set({"keys": [by_x5c]}))
    assert not certificate_in_key_set(other.certificate, other.der, KeySet.import_key_set({"keys": [by_key]}))
