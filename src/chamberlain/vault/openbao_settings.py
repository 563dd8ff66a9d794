"""`vault.openbao:` in chamberlain.yaml, apart from the client (vault/openbao.py), so that loading settings does
not import hvac and its HTTP stack: only a gateway configured for OpenBao pays for them."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chamberlain.vault.backend import BackendUnavailable, check_name

# A mount or path prefix: slash-separated segments of the secret-name alphabet; no '.'/'..' segment, no empty one.
_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,7}")


def _check_path(value: str) -> str:
    if not _PATH.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r} is not a mount or path: use segments of letters, digits, '.', '_', '-' and '/'")
    return value


class OpenBaoSettings(BaseModel):
    """`vault.openbao:` in chamberlain.yaml: where OpenBao is and how the gateway authenticates.

    The token is never written here: it comes from the environment variable `token_env`, or from `token_file`
    (a Vault Agent / OpenBao Agent sink, re-read when the token in hand can no longer be renewed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="https://HOST:8200 (http only on loopback)")
    namespace: str | None = Field(None, description="OpenBao namespace (X-Vault-Namespace); unset: the root")
    kv_mount: str = Field("secret", description="mount path of the KV version 2 engine")
    path_prefix: str = Field("chamberlain", description="secrets live under PREFIX/tenants/TENANT/SOURCE/NAME")
    transit_mount: str = Field("transit", description="mount path of the transit engine")
    transit_key: str = Field("chamberlain-kek", description="the transit key that wraps data keys")
    create_transit_key: bool = Field(False, description="create the transit key (derived aes256-gcm96) if missing")
    token_env: str = Field("BAO_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    token_file: Path | None = Field(None, description="read the token from this file instead of token_env")
    revoke_token_on_close: bool = Field(True, description="false when the token is shared (an Agent's sink)")
    ca_file: Path | None = Field(None, description="CA bundle for OpenBao's TLS certificate; unset: certifi's")
    client_cert: Path | None = Field(None, description="PEM client certificate, when the listener requires mTLS")
    client_key: Path | None = Field(None, description="its private key (PEM), if not in client_cert")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds for one request")
    # KV v2 keeps 10 versions unless told otherwise and silently drops older ones; rollback needs them until purged.
    max_versions: int = Field(100, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _url_is_origin(cls, value: str) -> str:
        check_url(value)
        return value.rstrip("/")

    @field_validator("kv_mount", "path_prefix", "transit_mount")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _check_path(value)

    @field_validator("transit_key")
    @classmethod
    def _key_name(cls, value: str) -> str:
        return check_name(value, "transit key name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)


def check_url(url: str) -> None:
    """An origin (scheme, host, port) and nothing else; plain http only to a loopback address, since the token
    travels in every request's header."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an https:// URL (or http:// on loopback)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials: the token comes from token_env or token_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be the server's origin only (no path, query or fragment)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("plain http is allowed only to a loopback address: use https")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway_policy(settings: OpenBaoSettings) -> str:
    """The least OpenBao policy (HCL) the gateway's token needs for these settings: its KV subtree and its one
    transit key. Looking up, renewing and revoking its own token come with OpenBao's `default` policy."""
    kv, prefix = settings.kv_mount, settings.path_prefix
    key = f"{settings.transit_mount}/keys/{settings.transit_key}"
    key_capabilities = '"read", "create", "update"' if settings.create_transit_key else '"read"'
    rules = [
        (f"{kv}/data/{prefix}/tenants/*", '"create", "read", "update"'),
        (f"{kv}/metadata/{prefix}/tenants/*", '"read", "list", "update", "delete"'),
        (f"{kv}/destroy/{prefix}/tenants/*", '"update"'),
        (f"{settings.transit_mount}/encrypt/{settings.transit_key}", '"update"'),
        (f"{settings.transit_mount}/decrypt/{settings.transit_key}", '"update"'),
        (f"{settings.transit_mount}/rewrap/{settings.transit_key}", '"update"'),
        (key, key_capabilities),
        (f"{key}/rotate", '"update"'),
        (f"{key}/config", '"update"'),  # min_decryption_version, to retire old versions after a rewrap
    ]
    return "".join(f'path "{path}" {{\n  capabilities = [{capabilities}]\n}}\n' for path, capabilities in rules)


def read_token(settings: OpenBaoSettings, environ: Mapping[str, str] | None = None) -> str:
    if settings.token_file is not None:
        try:
            token = settings.token_file.read_text(encoding="utf-8").strip()
        except OSError as problem:
            raise BackendUnavailable(
                f"cannot read the OpenBao token file {settings.token_file} ({problem.strerror})"
            ) from None
        if not token:
            raise BackendUnavailable(f"the OpenBao token file {settings.token_file} is empty")
        return token
    environ = os.environ if environ is None else environ
    token = environ.get(settings.token_env, "").strip()
    if not token:
        raise BackendUnavailable(
            f"no OpenBao token: set the environment variable {settings.token_env} (or vault.openbao.token_file)"
        )
    return token
