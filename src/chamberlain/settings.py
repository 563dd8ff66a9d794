"""One typed settings object, read from `chamberlain.yaml` and `CHAMBERLAIN_*` environment variables.

Precedence: built-in defaults < the YAML file < the environment < explicit overrides (CLI flags).
A wrong key or value is reported with its dotted name and where it came from (file and line, or variable).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from chamberlain.audit.settings import AuditSettings
from chamberlain.cost.budgets import BudgetRule
from chamberlain.crypto.master_key import ENV_VARIABLE as MASTER_KEY_VARIABLE
from chamberlain.dlp.config import DlpConfig
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.observability.settings import MetricsSettings
from chamberlain.policy.roles import DEFAULT_ROLES, RolesDocument
from chamberlain.sso.config import SsoConfig
from chamberlain.store.servers import check_server_name
from chamberlain.tenancy.config import LlmConfig, TenantConfig, TenantId
from chamberlain.transport.settings import TlsSettings, UnixSocketSettings
from chamberlain.vault.settings import DEFAULT_KEK_VARIABLE, VaultSettings

ENV_PREFIX = "CHAMBERLAIN_"
CONFIG_FILE_NAME = "chamberlain.yaml"
DEFAULT_DATA_DIR = Path(".chamberlain")
# `value_env: VAR` in a server's credential reads the secret from the environment when the settings load, so the
# file need not hold it; the key then stands for `value` (and `client_secret_env` for `client_secret`).
SECRET_REFERENCES = {"value_env": "value", "client_secret_env": "client_secret"}

ServerName = Annotated[str, AfterValidator(check_server_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoginSettings(_Section):
    max_failed_attempts: int = Field(5, ge=1, le=100)
    lockout_seconds: int = Field(900, ge=1)
    # RFC 6238 §5.2: one step of drift either way is the usual allowance.
    totp_valid_window: int = Field(1, ge=0, le=3)
    # Browser sessions end after session_ttl seconds without use (a role's session_duration, when shorter, wins)
    # and session_absolute_ttl seconds after sign-in whatever happens; a tenant's `sessions:` overrides both.
    session_ttl: int = Field(8 * 3600, ge=60, le=7 * 86_400, description="idle seconds before a sign-in lapses")
    session_absolute_ttl: int = Field(24 * 3600, ge=60, le=30 * 86_400, description="seconds a sign-in lasts")


class TokenSettings(_Section):
    access_token_ttl: int = Field(600, ge=30, le=86_400, description="seconds")
    refresh_token_ttl: int = Field(30 * 86_400, ge=60, description="seconds; absolute lifetime of a grant")
    authorization_code_ttl: int = Field(60, ge=10, le=600, description="seconds")
    signing_algorithm: Literal["ES256", "EdDSA"] = "ES256"


class RegistrationSettings(_Section):
    dynamic_registration: bool = True
    # Client ID Metadata Documents and clients' jwks_uri are fetched from URLs the client chose: private,
    # loopback and link-local targets are refused unless a developer opts in here (never in production).
    allow_private_networks: bool = False
    cimd_max_bytes: int = Field(5120, ge=512, le=1_048_576)
    fetch_timeout: float = Field(5.0, gt=0, le=30, description="seconds for one metadata or JWKS fetch")


class Settings(_Section):
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    issuer: str | None = Field(None, description="public base URL; derived from host and port when unset")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; SQLite in the data dir when unset")
    tenant: TenantId = Field("default", description="the tenant served at the root; others are under /t/{id}")
    scopes: tuple[str, ...] = ("mcp:tools", "mcp:resources", "mcp:prompts", "offline_access")
    demo_server: bool = True
    session_cookie_secure: bool | None = Field(None, description="defaults to true when the issuer is https")
    login: LoginSettings = LoginSettings()
    tokens: TokenSettings = TokenSettings()
    registration: RegistrationSettings = RegistrationSettings()
    # Upstream MCP servers by name; a name also registered in the database is this one.
    servers: dict[ServerName, ServerConfig] = Field(default_factory=dict)
    # Who may reach which server and tool (policy/roles.py): the enterprise_roles document, as-is or extended.
    roles: RolesDocument = DEFAULT_ROLES
    audit: AuditSettings = AuditSettings()
    # The default tenant's LLM proxy (/v1/messages): upstream, API keys from the vault, teams, model routes; and its
    # spend limits (cost/budgets.py). Other tenants set both under `tenants:`.
    llm: LlmConfig = LlmConfig()
    budgets: tuple[BudgetRule, ...] = ()
    # The default tenant's data protection (dlp/): detectors, clearance, the external lookup gate, compliance modes.
    dlp: DlpConfig = DlpConfig()
    # The default tenant's single sign-on (sso/config.py): identity providers, captured domains, the MFA floor.
    sso: SsoConfig = SsoConfig()
    # Tenants' own settings (tenancy/config.py); each section set here wins over the one stored by the admin API.
    tenants: dict[TenantId, TenantConfig] = Field(default_factory=dict)
    # Shared state of replicas: rate limits and daily quotas (policy/rate_limits.py). Unset: per-process memory.
    redis_url: str | None = Field(None, description="redis://HOST:PORT/DB")
    # When Redis is unreachable, rate limits fall back to per-process memory unless this refuses requests instead.
    rate_limits_fail_closed: bool = False
    # Graceful shutdown: seconds from SIGTERM until the gateway stops accepting, while /readyz answers 503 so a load
    # balancer polling it stops sending (Kubernetes: leave 0, the preStop pause does this).
    shutdown_drain_seconds: float = Field(0.0, ge=0, le=300)
    # Then in-flight requests and streams get this long to finish before they are cancelled (what they used is still
    # accounted). Keep it below Kubernetes' terminationGracePeriodSeconds (40) less the preStop pause (5), with
    # room for writing the queued audit events and usage records.
    shutdown_grace_seconds: float = Field(25.0, ge=0, le=3600)
    # The credential vault (vault/): where its key-encryption key comes from, default maximum ages.
    vault: VaultSettings = VaultSettings()
    # `chamberlain serve` on a Unix socket instead of TCP, and who may connect to it (transport/).
    uds: UnixSocketSettings = Field(default_factory=UnixSocketSettings)
    # HTTPS for `chamberlain serve`, client certificates (mTLS, RFC 8705), reloaded on change (transport/tls.py).
    tls: TlsSettings = Field(default_factory=TlsSettings)
    # /metrics (observability/): off unless enabled; a bearer token from CHAMBERLAIN_METRICS__BEARER_TOKEN guards it.
    metrics: MetricsSettings = MetricsSettings()

    @field_validator("issuer")
    @classmethod
    def _issuer_has_no_trailing_slash(cls, value: str | None) -> str | None:
        # RFC 8414 §2 and the MCP SDK compare issuers byte for byte; one canonical form avoids a mismatch.
        if value is not None and value.endswith("/"):
            raise ValueError("must not end with '/'")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_is_supported(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("is not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend!r} is not supported: use sqlite:///PATH or postgresql://USER@HOST/DB")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @property
    def public_url(self) -> str:
        if self.issuer:
            return self.issuer
        return f"http://{self.host}:{self.port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'chamberlain.db'}"

    @property
    def cookies_secure(self) -> bool:
        if self.session_cookie_secure is not None:
            return self.session_cookie_secure
        return self.public_url.startswith("https://")


class SettingsError(Exception):
    """A configuration mistake, with a message that names the key and where it was set."""


@dataclass(frozen=True)
class _Origin:
    where: str  # "chamberlain.yaml:12" or "environment variable CHAMBERLAIN_PORT"


def load_settings(
    data_dir: Path | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    data_dir = data_dir or Path(environ.get(f"{ENV_PREFIX}DATA_DIR", DEFAULT_DATA_DIR))
    config_file = config_file or _default_config_file(data_dir, environ)
    values: dict[str, Any] = {}
    origins: dict[tuple[str, ...], _Origin] = {}
    if config_file is not None:
        _merge(values, origins, *_read_yaml(config_file))
    _merge(values, origins, *_read_environment(environ))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            origins[(key,)] = _Origin("command-line option")
    values["data_dir"] = data_dir
    _prepare_servers(values, origins, environ)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, values, origins)) from None


def _default_config_file(data_dir: Path, environ: Mapping[str, str]) -> Path | None:
    explicit = environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        return Path(explicit)
    candidate = data_dir / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], _Origin]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if root is None:
        return {}, {}
    if not isinstance(root, yaml.MappingNode):
        raise SettingsError(f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of settings")
    origins: dict[tuple[str, ...], _Origin] = {}
    _record_lines(root, (), str(path), origins)
    data = yaml.safe_load(text)
    return data, origins


def _record_lines(node: yaml.Node, prefix: tuple[str, ...], file: str, out: dict[tuple[str, ...], _Origin]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = _Origin(f"{file}:{key_node.start_mark.line + 1}")
            _record_lines(value_node, path, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*prefix, str(index))] = _Origin(f"{file}:{item.start_mark.line + 1}")
            _record_lines(item, (*prefix, str(index)), file, out)


# Variables read by their own modules, not settings: the data dir and file (here), the master key
# (crypto/master_key.py), the vault KEK (vault/kek.py), the desktop CLI's (cli/login.py).
_NOT_SETTINGS = frozenset(
    {
        f"{ENV_PREFIX}DATA_DIR",
        f"{ENV_PREFIX}CONFIG",
        MASTER_KEY_VARIABLE,
        DEFAULT_KEK_VARIABLE,
        f"{ENV_PREFIX}URL",
        f"{ENV_PREFIX}ALLOW_INSECURE_KEYCHAIN",
    }
)


def _read_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], _Origin]]:
    """`CHAMBERLAIN_TOKENS__ACCESS_TOKEN_TTL=300` sets `tokens.access_token_ttl`; values are parsed as YAML scalars."""
    values: dict[str, Any] = {}
    origins: dict[tuple[str, ...], _Origin] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        for depth in range(1, len(path) + 1):
            origins.setdefault(path[:depth], _Origin(f"environment variable {name}"))
    return values, origins


def _merge(
    values: dict[str, Any],
    origins: dict[tuple[str, ...], _Origin],
    new_values: Any,
    new_origins: dict[tuple[str, ...], _Origin],
) -> None:
    if not isinstance(new_values, dict):
        return
    _deep_merge(values, new_values)
    origins.update(new_origins)


def _deep_merge(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _prepare_servers(
    values: dict[str, Any], origins: dict[tuple[str, ...], _Origin], environ: Mapping[str, str]
) -> None:
    """What the file may write more conveniently than `ServerConfig` reads it: secrets named by environment
    variable, and `command` as one shell-style string."""
    servers = values.get("servers")
    if not isinstance(servers, dict):
        return
    for name, server in servers.items():
        if not isinstance(server, dict):
            continue
        path = ("servers", str(name))
        if isinstance(server.get("command"), str):
            try:
                server["command"] = shlex.split(server["command"])
            except ValueError as exc:
                raise SettingsError(
                    _located((*path, "command"), origins, f"cannot split the command line ({exc})")
                ) from None
        credential = server.get("credential")
        if isinstance(credential, dict):
            _read_secret_references(credential, (*path, "credential"), origins, environ)


def _read_secret_references(
    credential: dict[str, Any],
    path: tuple[str, ...],
    origins: dict[tuple[str, ...], _Origin],
    environ: Mapping[str, str],
) -> None:
    for reference, key in SECRET_REFERENCES.items():
        if reference not in credential:
            continue
        variable = credential.pop(reference)
        where = (*path, reference)
        if key in credential:
            raise SettingsError(_located(where, origins, f"give '{key}' or '{reference}', not both"))
        if not isinstance(variable, str) or not variable:
            raise SettingsError(_located(where, origins, "must name an environment variable"))
        secret = environ.get(variable)
        if not secret:
            raise SettingsError(_located(where, origins, f"environment variable {variable} is not set or empty"))
        credential[key] = secret
        if where in origins:
            origins[(*path, key)] = origins[where]


def _describe(exc: ValidationError, values: Mapping[str, Any], origins: Mapping[tuple[str, ...], _Origin]) -> str:
    lines = []
    for error in exc.errors():
        path = _written_path(error["loc"], values)
        if error["type"] == "extra_forbidden":
            lines.append(f"{_where(path, origins)}unknown setting '{'.'.join(path)}'")
        else:
            lines.append(_located(path, origins, error["msg"]))
    return "\n".join(lines)


def _located(path: tuple[str, ...], origins: Mapping[tuple[str, ...], _Origin], message: str) -> str:
    return f"{_where(path, origins)}setting '{'.'.join(path)}': {message}"


def _where(path: tuple[str, ...], origins: Mapping[tuple[str, ...], _Origin]) -> str:
    origin = _closest_origin(path, origins)
    return f"{origin.where}: " if origin else ""


def _written_path(loc: tuple[int | str, ...], values: Mapping[str, Any]) -> tuple[str, ...]:
    """An error's location as the file spells it: without pydantic's `[key]` marker (an invalid mapping key) or
    the tag it inserts after a discriminated union (`credential.header.value` is `credential.value`)."""
    path: list[str] = []
    node: Any = values
    entered = False  # the tag comes first inside the union's value, and may equal a field name (`header`)
    for part in loc:
        if part == "[key]" or (entered and isinstance(node, Mapping) and node.get("type") == part):
            entered = False
            continue
        node = node.get(part) if isinstance(node, Mapping) else None
        entered = True
        path.append(str(part))
    return tuple(path)


def _closest_origin(path: tuple[str, ...], origins: Mapping[tuple[str, ...], _Origin]) -> _Origin | None:
    for depth in range(len(path), 0, -1):
        origin = origins.get(path[:depth])
        if origin is not None:
            return origin
    return None
