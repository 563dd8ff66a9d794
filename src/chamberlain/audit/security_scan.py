"""`chamberlain security-scan`: a lint of the configuration and the store for settings that weaken security.

Each check reads the settings, what the store holds (the `Inventory`), or the configuration file's raw text, and
returns findings. A finding names the configuration key or object it concerns and how to fix it; it never repeats
a secret value. Known-vulnerable dependencies come from `pip-audit` when it is installed; without it the scan says
so in an info finding and carries on.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from chamberlain.audit.events import Action
from chamberlain.audit.reader import read_events
from chamberlain.audit.records import StoredEvent
from chamberlain.crypto.master_key import MasterKey
from chamberlain.net.hosts import is_loopback_host
from chamberlain.policy.roles import ANY
from chamberlain.settings import Settings
from chamberlain.store import keys as key_store
from chamberlain.store.clients import ClientRecord, ClientRepository
from chamberlain.store.database import Database
from chamberlain.store.servers import ServerRepository, configured_servers, merge_servers
from chamberlain.store.users import UserRepository

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
DAY = 86_400.0
_PAGE = 1000
# Environment variable names of a stdio server that usually carry a credential.
_SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE_KEY", "CREDENTIAL")


def severity_rank(severity: Severity) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class Finding:
    id: str  # the check, e.g. "wildcard-role"; several findings of one check differ by `target`
    severity: Severity
    title: str
    detail: str
    target: str  # the configuration key ("login.session_ttl") or object ("user:alice", "client:abc")
    fix: str
    location: str | None = None  # "chamberlain.yaml:12" when the finding points into the file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ScanLimits:
    max_session_seconds: int = 12 * 3600  # NIST SP 800-63B §4.2.3: reauthenticate at least every 12 hours
    max_refresh_token_seconds: int = 90 * 86_400
    max_access_token_seconds: int = 3600
    max_signing_key_age_days: int = 90
    max_credential_age_days: int = 90


# -- what the store holds ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserFacts:
    username: str
    roles: tuple[str, ...]
    mfa: bool  # a TOTP factor is enrolled
    disabled: bool
    administrator: bool  # holds a role with administrative_functions
    last_login_at: float | None


@dataclass(frozen=True, slots=True)
class SigningKeyFacts:
    kid: str
    created_at: float
    signing: bool  # the key in use (the others only verify until their tokens expire)


@dataclass(frozen=True, slots=True)
class CredentialFacts:
    server: str
    source: Literal["database", "config"]
    last_rotated_at: float | None  # the newest credential.rotated event, else when the server was registered


@dataclass(frozen=True, slots=True)
class Inventory:
    users: tuple[UserFacts, ...]
    signing_keys: tuple[SigningKeyFacts, ...]
    credentials: tuple[CredentialFacts, ...]
    clients: tuple[ClientRecord, ...]  # not revoked
    built_in_servers: tuple[str, ...]  # served inside the gateway (the demo)


def administrator_roles(settings: Settings) -> frozenset[str]:
    return frozenset(name for name, role in settings.roles.enterprise_roles.items() if role.administrative_functions)


def server_credential_target(server: str) -> str:
    """The `target` of a credential.rotated event for an upstream server's credential."""
    return f"server:{server}"


async def events_in(
    database: Database,
    tenant: str,
    *,
    since: float | None = None,
    until: float | None = None,
    actions: Collection[str] | None = None,
) -> AsyncIterator[StoredEvent]:
    """Every matching event in chain order, a page at a time (a report may span millions)."""
    from_seq = 0
    while True:
        page = await read_events(
            database, tenant, from_seq=from_seq, limit=_PAGE, since=since, until=until, actions=actions
        )
        for event in page:
            yield event
        if len(page) < _PAGE:
            return
        from_seq = page[-1].seq + 1


async def read_inventory(database: Database, settings: Settings, master_key: MasterKey) -> Inventory:
    admin_roles = administrator_roles(settings)
    users = tuple(
        UserFacts(
            username=user.username,
            roles=user.roles,
            mfa=user.totp_secret is not None,
            disabled=user.disabled,
            administrator=bool(admin_roles.intersection(user.roles)),
            last_login_at=user.last_login_at,
        )
        for user in await UserRepository(database, settings.tenant).list()
    )
    signing_keys = tuple(
        SigningKeyFacts(str(row.kid), float(row.created_at), row.retired_at is None)
        for row in await key_store.usable_keys(database)
    )
    stored = await ServerRepository(database, settings.tenant, master_key).list()
    servers, _ = merge_servers(configured_servers(settings), stored)
    rotations: dict[str, float] = {}
    async for event in events_in(database, settings.tenant, actions=[Action.CREDENTIAL_ROTATED]):
        target = event.public.get("target")
        if event.outcome == "success" and isinstance(target, str):
            rotations[target] = max(rotations.get(target, 0.0), event.time)
    credentials = tuple(
        CredentialFacts(
            server=server.name,
            source=server.source,
            last_rotated_at=max(
                (when for when in (rotations.get(server_credential_target(server.name)), server.created_at) if when),
                default=None,
            ),
        )
        for server in servers
        if server.config is not None and (server.config.credential.type != "none" or server.config.env)
    )
    clients = tuple(
        client for client in await ClientRepository(database, settings.tenant).list() if client.revoked_at is None
    )
    built_in = tuple(server.name for server in servers if server.config is None)
    return Inventory(users, signing_keys, credentials, clients, built_in)


# -- the checks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigFileText:
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class ScanContext:
    settings: Settings
    inventory: Inventory
    config_file: ConfigFileText | None
    limits: ScanLimits
    now: float

    @property
    def issuer_on_loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.settings.public_url).hostname)


def _mfa_not_enforced(context: ScanContext) -> list[Finding]:
    active = [user for user in context.inventory.users if not user.disabled]
    findings = [
        Finding(
            id="mfa-not-enforced",
            severity="high",
            title="Administrator without a second factor",
            detail=f"{user.username!r} holds an administrative role ({', '.join(user.roles)}) and signs in with a "
            "password alone.",
            target=f"user:{user.username}",
            fix=f"chamberlain users totp {user.username}",
        )
        for user in active
        if user.administrator and not user.mfa
    ]
    others = [user.username for user in active if not user.administrator and not user.mfa]
    if others:
        shown = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
        findings.append(
            Finding(
                id="mfa-not-enforced",
                severity="medium",
                title="Users without a second factor",
                detail=f"{len(others)} of {len(active)} active users have no TOTP factor: {shown}.",
                target="users",
                fix="Enrol each with 'chamberlain users totp NAME'.",
            )
        )
    return findings


def _long_session_lifetimes(context: ScanContext) -> list[Finding]:
    limits = context.limits
    settings = context.settings
    findings: list[Finding] = []

    def too_long(key: str, seconds: int, limit: int, severity: Severity, why: str) -> None:
        if seconds > limit:
            findings.append(
                Finding(
                    id="long-session-lifetime",
                    severity=severity,
                    title=f"{key} is long",
                    detail=f"{key} is {_duration(seconds)}; {why} (limit {_duration(limit)}).",
                    target=key,
                    fix=f"Set {key} to {limit} seconds or less.",
                )
            )

    reauthenticate = "NIST SP 800-63B §4.2.3 asks for reauthentication at least every 12 hours"
    too_long("login.session_ttl", settings.login.session_ttl, limits.max_session_seconds, "medium", reauthenticate)
    too_long(
        "tokens.refresh_token_ttl",
        settings.tokens.refresh_token_ttl,
        limits.max_refresh_token_seconds,
        "medium",
        "a stolen refresh token works for that long",
    )
    too_long(
        "tokens.access_token_ttl",
        settings.tokens.access_token_ttl,
        limits.max_access_token_seconds,
        "low",
        "access tokens are bearer credentials and should be short-lived",
    )
    for name, role in sorted(settings.roles.enterprise_roles.items()):
        if role.session_duration is not None and role.session_duration * 60 > limits.max_session_seconds:
            findings.append(
                Finding(
                    id="long-session-lifetime",
                    severity="medium",
                    title=f"Role {name!r} has a long session duration",
                    detail=f"session_duration is {_duration(role.session_duration * 60)}; {reauthenticate}.",
                    target=f"roles.enterprise_roles.{name}.session_duration",
                    fix=f"Set session_duration to {limits.max_session_seconds // 60} minutes or less.",
                )
            )
    return findings


def _wildcard_roles(context: ScanContext) -> list[Finding]:
    findings: list[Finding] = []
    for name, role in sorted(context.settings.roles.enterprise_roles.items()):
        if role.administrative_functions:
            continue
        if role.mcp_servers == ANY:
            findings.append(
                Finding(
                    id="wildcard-role",
                    severity="high",
                    title=f"Role {name!r} reaches every MCP server",
                    detail='mcp_servers is "*" on a role without administrative functions: every server added '
                    "later is open to it too.",
                    target=f"roles.enterprise_roles.{name}.mcp_servers",
                    fix="List the servers the role needs.",
                )
            )
        if role.data_classification_access == ANY:
            findings.append(
                Finding(
                    id="wildcard-role",
                    severity="medium",
                    title=f"Role {name!r} may see data of every classification",
                    detail='data_classification_access is "*" on a role without administrative functions.',
                    target=f"roles.enterprise_roles.{name}.data_classification_access",
                    fix="List the classifications the role needs (e.g. public, internal).",
                )
            )
    return findings


def _plaintext_secrets(context: ScanContext) -> list[Finding]:
    """Secrets written into the file: they end up in backups, repositories and support bundles."""
    if context.config_file is None:
        return []
    try:
        root = yaml.compose(context.config_file.text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []  # the settings loaded, so this cannot happen; nothing to lint if it does
    findings: list[Finding] = []
    file = context.config_file.path.name

    def plaintext(key: str, node: yaml.Node, fix: str) -> None:
        findings.append(
            Finding(
                id="plaintext-secret",
                severity="high",
                title="Secret written in the configuration file",
                detail=f"{key} holds a literal secret value in {file}.",
                target=key,
                fix=fix,
                location=f"{file}:{node.start_mark.line + 1}",
            )
        )

    servers = _child(root, "servers")
    for server_name, server in _items(servers):
        credential = _child(server, "credential")
        for key, reference in (("value", "value_env"), ("client_secret", "client_secret_env")):
            secret = _literal(_child(credential, key))
            if secret is not None:
                plaintext(
                    f"servers.{server_name}.credential.{key}",
                    secret,
                    f"Replace '{key}' with '{reference}: VARIABLE' and set the secret in that environment variable.",
                )
        for variable, value in _items(_child(server, "env")):
            if _literal(value) is not None and any(part in variable.upper() for part in _SECRET_NAME_PARTS):
                plaintext(
                    f"servers.{server_name}.env.{variable}",
                    value,
                    f"Register the server with 'chamberlain servers add' (its environment is stored encrypted) "
                    f"instead of writing {variable} in the file.",
                )
    database_url = _literal(_child(root, "database_url"))
    if database_url is not None and _has_password(database_url.value):
        plaintext("database_url", database_url, "Set CHAMBERLAIN_DATABASE_URL in the environment instead.")
    return findings


def _http_issuer(context: ScanContext) -> list[Finding]:
    parts = urlsplit(context.settings.public_url)
    if parts.scheme != "http" or context.issuer_on_loopback:
        return []
    return [
        Finding(
            id="http-issuer",
            severity="critical",
            title="The issuer is plain http on a network address",
            detail=f"{context.settings.public_url} sends passwords, codes and tokens in clear text; OAuth 2.1 §1.5 "
            "requires TLS everywhere but loopback.",
            target="issuer",
            fix="Serve over https (a TLS-terminating proxy is fine) and set issuer to the https URL.",
        )
    ]


def _stale_signing_keys(context: ScanContext) -> list[Finding]:
    limit = context.limits.max_signing_key_age_days
    return [
        Finding(
            id="signing-key-not-rotated",
            severity="medium",
            title="Token signing key past its rotation age",
            detail=f"The signing key {key.kid} is {_age_days(key.created_at, context.now)} days old (limit {limit}).",
            target=f"signing_key:{key.kid}",
            fix="chamberlain keys rotate",
        )
        for key in context.inventory.signing_keys
        if key.signing and _age_days(key.created_at, context.now) > limit
    ]


def _credentials_past_rotation(context: ScanContext) -> list[Finding]:
    limit = context.limits.max_credential_age_days
    findings: list[Finding] = []
    for credential in context.inventory.credentials:
        target = f"servers.{credential.server}.credential"
        if credential.last_rotated_at is None:
            findings.append(
                Finding(
                    id="credential-not-rotated",
                    severity="low",
                    title=f"No rotation date for the credential of server {credential.server!r}",
                    detail="The server is configured in the file and no credential.rotated event names it, so "
                    "its credential's age is unknown.",
                    target=target,
                    fix="Rotate the credential and record it (the vault records credential.rotated).",
                )
            )
        elif _age_days(credential.last_rotated_at, context.now) > limit:
            findings.append(
                Finding(
                    id="credential-not-rotated",
                    severity="medium",
                    title=f"The credential of server {credential.server!r} is past its rotation age",
                    detail=f"Last set {_age_days(credential.last_rotated_at, context.now)} days ago (limit {limit}).",
                    target=target,
                    fix="Issue a new credential upstream and update the server with it.",
                )
            )
    return findings


def _permissive_redirect_uris(context: ScanContext) -> list[Finding]:
    findings: list[Finding] = []
    for client in context.inventory.clients:
        uris = client.client_metadata.get("redirect_uris") or []
        for uri in uris if isinstance(uris, list) else []:
            problem = _redirect_uri_problem(str(uri))
            if problem:
                findings.append(
                    Finding(
                        id="permissive-redirect-uri",
                        severity="high",
                        title="A client may receive codes at a permissive redirect URI",
                        detail=f"{uri!r} {problem}.",
                        target=f"client:{client.client_id}",
                        fix=f"chamberlain clients revoke {client.client_id} and register it with exact https "
                        "(or loopback) redirect URIs.",
                    )
                )
    return findings


def _redirect_uri_problem(uri: str) -> str | None:
    # RFC 9700 §2.1: exact matching; RFC 8252 §8.3: plain http only for loopback redirects.
    if "*" in uri:
        return "contains a wildcard"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return "is not a valid URI"
    if parts.scheme.lower() == "http" and not is_loopback_host(host):
        return "is plain http on a non-loopback host"
    return None


def _registration(context: ScanContext) -> list[Finding]:
    registration = context.settings.registration
    findings: list[Finding] = []
    if registration.allow_private_networks:
        findings.append(
            Finding(
                id="private-network-fetches",
                severity="high",
                title="Client metadata may be fetched from private networks",
                detail="registration.allow_private_networks lets a client make the server fetch URLs on loopback, "
                "private and link-local addresses (server-side request forgery).",
                target="registration.allow_private_networks",
                fix="Set registration.allow_private_networks: false (it is for development only).",
            )
        )
    if registration.dynamic_registration:
        findings.append(
            Finding(
                id="open-dynamic-registration",
                severity="low" if not context.issuer_on_loopback else "info",
                title="Anyone who reaches the server can register a client",
                detail="RFC 7591 dynamic registration is open; consent and redirect URI rules still apply.",
                target="registration.dynamic_registration",
                fix="If your clients publish Client ID Metadata Documents or are registered by an administrator, "
                "set registration.dynamic_registration: false.",
            )
        )
    return findings


def _demo_server_in_production(context: ScanContext) -> list[Finding]:
    if context.issuer_on_loopback:
        return []
    return [
        Finding(
            id="demo-server-exposed",
            severity="medium",
            title=f"The built-in server {name!r} is served on a network address",
            detail="The demo MCP server is for trying Chamberlain out; it has no place in production.",
            target=f"server:{name}",
            fix=f"chamberlain servers remove {name}",
        )
        for name in context.inventory.built_in_servers
    ]


CHECKS: tuple[Callable[[ScanContext], list[Finding]], ...] = (
    _mfa_not_enforced,
    _long_session_lifetimes,
    _wildcard_roles,
    _plaintext_secrets,
    _http_issuer,
    _stale_signing_keys,
    _credentials_past_rotation,
    _permissive_redirect_uris,
    _registration,
    _demo_server_in_production,
)


def scan_configuration(
    settings: Settings,
    inventory: Inventory,
    config_file: ConfigFileText | None,
    *,
    limits: ScanLimits = ScanLimits(),
    now: float | None = None,
) -> list[Finding]:
    context = ScanContext(settings, inventory, config_file, limits, time.time() if now is None else now)
    return [finding for check in CHECKS for finding in check(context)]


def by_severity(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; ties keep the order of the checks."""
    return sorted(findings, key=lambda finding: -severity_rank(finding.severity))


def fails(findings: Iterable[Finding], fail_on: Severity) -> bool:
    return any(severity_rank(finding.severity) >= severity_rank(fail_on) for finding in findings)


def scan_document(
    findings: list[Finding], *, tenant: str, fail_on: Severity, now: float | None = None
) -> dict[str, Any]:
    """The JSON output (`SCAN_JSON_SCHEMA` is its contract)."""
    scanned_at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return {
        "report": "security-scan",
        "version": 1,
        "tenant": tenant,
        "scanned_at": scanned_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "fail_on": fail_on,
        "failed": fails(findings, fail_on),
        "summary": {severity: sum(finding.severity == severity for finding in findings) for severity in SEVERITIES},
        "findings": [finding.as_dict() for finding in findings],
    }


SCAN_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["report", "version", "tenant", "scanned_at", "fail_on", "failed", "summary", "findings"],
    "additionalProperties": False,
    "properties": {
        "report": {"const": "security-scan"},
        "version": {"const": 1},
        "tenant": {"type": "string"},
        "scanned_at": {"type": "string"},
        "fail_on": {"enum": list(SEVERITIES)},
        "failed": {"type": "boolean"},
        "summary": {
            "type": "object",
            "required": list(SEVERITIES),
            "additionalProperties": False,
            "properties": {severity: {"type": "integer", "minimum": 0} for severity in SEVERITIES},
        },
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "severity", "title", "detail", "target", "fix", "location"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                    "severity": {"enum": list(SEVERITIES)},
                    "title": {"type": "string", "minLength": 1},
                    "detail": {"type": "string"},
                    "target": {"type": "string", "minLength": 1},
                    "fix": {"type": "string", "minLength": 1},
                    "location": {"type": ["string", "null"]},
                },
            },
        },
    },
}


# -- dependencies ------------------------------------------------------------------------------------------------


def audit_dependencies(pip_audit: str | None, python: str, *, timeout: float = 300.0) -> list[Finding]:
    """Known vulnerabilities of the packages installed for `python`, from `pip-audit` (which queries the PyPI and
    OSV advisory databases). Without the tool, one info finding; never a failure."""
    if pip_audit is None:
        return [
            Finding(
                id="dependency-audit-skipped",
                severity="info",
                title="Dependencies were not checked for known vulnerabilities",
                detail="pip-audit is not installed.",
                target="dependencies",
                fix="pip install pip-audit, then run the scan again.",
            )
        ]
    # PIPAPI_PYTHON_LOCATION makes pip-audit inspect the environment of `python` rather than its own.
    try:
        completed = subprocess.run(  # noqa: S603 (a fixed argument list; no shell)
            [pip_audit, "--format", "json", "--progress-spinner", "off"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**_minimal_environment(), "PIPAPI_PYTHON_LOCATION": python},
            check=False,
        )
        report = json.loads(completed.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as problem:
        # pip-audit exits 1 when it finds vulnerabilities, so only a missing report means it failed.
        return [
            Finding(
                id="dependency-audit-failed",
                severity="low",
                title="pip-audit did not produce a report",
                detail=f"Running {pip_audit} failed ({type(problem).__name__}).",
                target="dependencies",
                fix="Run 'pip-audit' by hand to see why.",
            )
        ]
    return _vulnerability_findings(report)


def _vulnerability_findings(report: Any) -> list[Finding]:
    # pip-audit ≥ 2.5 prints {"dependencies": [...], "fixes": [...]}; earlier versions print the list alone.
    dependencies = report.get("dependencies", []) if isinstance(report, dict) else report
    findings: list[Finding] = []
    for dependency in dependencies if isinstance(dependencies, list) else []:
        for vulnerability in dependency.get("vulns", []) if isinstance(dependency, dict) else []:
            name, version = dependency.get("name"), dependency.get("version")
            fixed_in = ", ".join(vulnerability.get("fix_versions") or []) or "no fixed version yet"
            aliases = ", ".join(vulnerability.get("aliases") or [])
            findings.append(
                Finding(
                    id="vulnerable-dependency",
                    severity="high",
                    title=f"{name} {version} has a known vulnerability ({vulnerability.get('id')})",
                    detail=(vulnerability.get("description") or "").strip()[:500]
                    + (f" Also known as {aliases}." if aliases else ""),
                    target=f"dependency:{name}",
                    fix=f"Upgrade {name} (fixed in: {fixed_in}).",
                )
            )
    return findings


def _minimal_environment() -> dict[str, str]:
    # pip-audit needs PATH and a home for its cache; it gets none of the gateway's secrets.
    return {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "SSL_CERT_FILE")}


# -- small helpers -----------------------------------------------------------------------------------------------


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def _items(node: yaml.Node | None) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(str(key_node.value), value_node) for key_node, value_node in node.value]


def _literal(node: yaml.Node | None) -> yaml.ScalarNode | None:
    """The node when it is a non-empty string written in the file."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and node.value:
        return node
    return None


def _has_password(url: str) -> bool:
    try:
        return bool(make_url(url).password)
    except ArgumentError:
        return False


def _age_days(since: float, now: float) -> int:
    return int((now - since) // DAY)


def _duration(seconds: int) -> str:
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds} seconds"
