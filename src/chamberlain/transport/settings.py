"""The `uds:` and `tls:` sections of chamberlain.yaml: the Unix socket `chamberlain serve` listens on and who may
connect; the server certificate and which client certificates are accepted."""

from __future__ import annotations

import base64
import binascii
import os
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chamberlain.transport.unix_socket import PeerPolicy

# uid_t and gid_t are 32-bit unsigned; (uid_t)-1 means "no change" to chown(2) and is never a real user or group.
UnixId = Annotated[int, Field(ge=0, lt=2**32 - 1)]


class UnixSocketSettings(BaseModel):
    """A peer is admitted when its uid is in `allowed_uids` or its gid is in `allowed_gids` (see PeerPolicy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="serve on this Unix socket instead of TCP (as `serve --uds PATH`)")
    allowed_uids: tuple[UnixId, ...] = Field(
        default_factory=lambda: (os.geteuid(),), description="default: only the user running the server"
    )
    allowed_gids: tuple[UnixId, ...] = ()

    @model_validator(mode="after")
    def _someone_may_connect(self) -> UnixSocketSettings:
        if not self.allowed_uids and not self.allowed_gids:
            raise ValueError("allowed_uids and allowed_gids are both empty, so nobody could connect")
        return self

    @property
    def policy(self) -> PeerPolicy:
        return PeerPolicy(frozenset(self.allowed_uids), frozenset(self.allowed_gids))


ClientCertificates = Literal["none", "optional", "required"]


class TlsSettings(BaseModel):
    """The `tls:` section: HTTPS for `chamberlain serve`, and client certificates (mutual TLS, RFC 8705).

    Files are re-read without a restart when they change (checked at most every `reload_interval` seconds, on a new
    handshake); a change that does not load keeps the previous certificates and logs why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: Path | None = Field(None, description="PEM file: the server certificate, then its intermediates")
    private_key: Path | None = Field(None, description="PEM file: the certificate's private key (unencrypted)")
    client_ca: Path | None = Field(None, description="PEM bundle of the CAs whose client certificates are accepted")
    client_certificates: ClientCertificates | None = Field(
        None, description="none, optional or required (default: required when client_ca is set, else none)"
    )
    pinned_client_spki: tuple[str, ...] = Field(
        (), description="SHA-256 of accepted client certificates' SubjectPublicKeyInfo, base64url or hex"
    )
    reload_interval: float = Field(30.0, ge=0, description="seconds between checks of the files; 0 never reloads")

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("tls.certificate and tls.private_key go together")
        if self.certificate is None and (self.client_ca is not None or self.pinned_client_spki):
            raise ValueError("tls.client_ca and tls.pinned_client_spki need tls.certificate and tls.private_key")
        if self.client_ca is None and self.client_certificates not in (None, "none"):
            raise ValueError(f"tls.client_certificates: {self.client_certificates} needs tls.client_ca")
        if self.pinned_client_spki and self.client_certificate_mode != "required":
            # A pin on an optional certificate would let a client without one through, which is not what a pin means.
            raise ValueError("tls.pinned_client_spki needs client certificates to be required")
        for pin in self.pinned_client_spki:
            parse_spki_pin(pin)
        return self

    @property
    def enabled(self) -> bool:
        return self.certificate is not None

    @property
    def client_certificate_mode(self) -> ClientCertificates:
        if self.client_certificates is not None:
            return self.client_certificates
        return "required" if self.client_ca is not None else "none"

    @property
    def pins(self) -> frozenset[bytes]:
        return frozenset(parse_spki_pin(pin) for pin in self.pinned_client_spki)


def parse_spki_pin(pin: str) -> bytes:
    """A SHA-256 digest written as 64 hex digits, or as base64/base64url (RFC 7469 §2.4 uses base64)."""
    text = pin.strip()
    if len(text) == 64 and all(character in string.hexdigits for character in text):
        return bytes.fromhex(text)
    try:
        digest = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_").rstrip("=") + "==")
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"tls pin {pin[:70]!r} is not a SHA-256 digest in hex or base64url")
    return digest
