"""The `audit: sinks:` list of chamberlain.yaml: where the audit log is streamed, and how.

```yaml
audit:
  sinks:
    - {type: syslog, host: siem.example.com, port: 6514, ca_file: /etc/ssl/siem-ca.pem}
    - {type: webhook, url: "https://siem.example.com/ingest", secret_env: CHAMBERLAIN_WEBHOOK_SECRET}
    - {type: ocsf_file, path: /var/log/chamberlain/audit.ocsf.jsonl, include_personal: true}
```
Each sink keeps its own cursor under its `name` (default: its type): renaming a sink makes it start again from
the first event.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # fits audit_sink_cursors.sink


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(None, pattern=_NAME, description="the cursor's key; defaults to the sink's type")
    # Personal fields (names, addresses) leave the log only where the configuration says so: GDPR Art. 5(1)(c).
    include_personal: bool = False
    batch_size: int = Field(500, ge=1, le=10_000, description="events per delivery at most")

    @property
    def cursor_name(self) -> str:
        return self.name or self.type


class SyslogSinkSettings(_Sink):
    """RFC 5424 messages carrying CEF, over TCP (RFC 6587) or TLS (RFC 5425; the default)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="default 6514 with TLS (RFC 5425), else 514")
    tls: bool = True
    ca_file: Path | None = Field(None, description="CA bundle to trust instead of the system's")
    server_name: str | None = Field(None, description="the name the certificate must carry; default: host")
    facility: int = Field(13, ge=0, le=23, description="RFC 5424 §6.2.1; 13 is 'log audit'")
    hostname: str | None = Field(None, description="the HOSTNAME field; default: this machine's name")
    timeout: float = Field(10.0, gt=0, description="seconds to connect or to send one batch")

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 6514 if self.tls else 514


class WebhookSinkSettings(_Sink):
    """OCSF JSON lines POSTed to a URL, signed with HMAC-SHA256 under a secret read from the environment."""

    type: Literal["webhook"]
    url: str
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable with the secret")
    ca_file: Path | None = None
    timeout: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        # Audit events must not cross a network in clear: http is only accepted to this machine.
        parts = urlsplit(url)
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("must be https:// (http is accepted for loopback addresses only)")
        return url


class OcsfFileSinkSettings(_Sink):
    """OCSF JSON lines appended to a file (for a collector that tails it)."""

    type: Literal["ocsf_file"]
    path: Path


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


SinkSettings = Annotated[SyslogSinkSettings | WebhookSinkSettings | OcsfFileSinkSettings, Field(discriminator="type")]


def _unique_names(sinks: tuple[SinkSettings, ...]) -> tuple[SinkSettings, ...]:
    names = [sink.cursor_name for sink in sinks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"sink names must be unique (each keeps its own cursor): give {duplicates} distinct names")
    return sinks


# The type of AuditSettings.sinks: `sinks: Sinks = ()`.
Sinks = Annotated[tuple[SinkSettings, ...], AfterValidator(_unique_names)]
