"""The relational schema. Every row that belongs to a tenant carries `tenant_id`; repositories always filter on it.

Secrets never sit here in clear: passwords are argon2id hashes, client secrets, codes, refresh tokens and session ids
are SHA-256 digests of 256-bit random values, and signing keys, TOTP seeds and upstream servers' credentials are
AES-GCM encrypted under the master key.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Times are Unix seconds (float): one representation on SQLite and PostgreSQL, cheap to compare with token claims.

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    # The tenant's own settings (tenancy/config.py TenantConfig as JSON): roles, sessions, quotas, rate limits.
    # The config file's `tenants:` section wins over this, key by key.
    Column("config", JSON(none_as_null=True), nullable=True),
    Column("updated_at", Float, nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("username", String(200), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("roles", JSON, nullable=False),
    Column("totp_secret", LargeBinary, nullable=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", Float, nullable=True),
    Column("must_change_password", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
    UniqueConstraint("tenant_id", "username"),
)

clients = Table(
    "clients",
    metadata,
    # A client (a CIMD URL especially) may sign in to several tenants: each keeps its own row.
    Column("client_id", String(2000), nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    # "dynamic" (RFC 7591), "metadata_document" (CIMD: a cached copy of the fetched document) or "static".
    Column("registration", String(32), nullable=False),
    Column("secret_hash", LargeBinary, nullable=True),
    Column("client_metadata", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    PrimaryKeyConstraint("tenant_id", "client_id"),
)

servers = Table(
    "servers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("url", String(2000), nullable=True),  # the upstream URL, for readers of the first schema
    Column("scopes", JSON, nullable=False),
    # A ServerConfig without secret values; NULL for the built-in demo server.
    Column("config", JSON(none_as_null=True), nullable=True),
    # The secret values as JSON, AES-GCM encrypted under the master key with "server:" + id as associated data.
    Column("secrets", LargeBinary, nullable=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("private_key", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    # Signing stops at retired_at; verification stops at expires_at (retired_at + the longest token lifetime).
    Column("retired_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(2000), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", String(2000), nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_consents_lookup", "tenant_id", "user_id", "client_id"),
)

grants = Table(
    "grants",
    metadata,
    # One authorization (code or client credentials) and every token derived from it: the refresh "family".
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("client_id", String(2000), nullable=False),
    Column("user_id", String(36), nullable=True),
    Column("scope", String(2000), nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("auth_time", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    # The user's roles when the grant was made; NULL for client credentials and grants made before revision 0002.
    Column("roles", JSON(none_as_null=True), nullable=True),
    Index("ix_grants_client", "tenant_id", "client_id"),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", LargeBinary, primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("client_id", String(2000), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("redirect_uri_given", Boolean, nullable=False),
    Column("scope", String(2000), nullable=False),
    Column("resource", String(2000), nullable=False),
    Column("code_challenge", String(128), nullable=True),
    Column("auth_time", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("grant_id", String(36), nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("grant_id", String(36), ForeignKey("grants.id", ondelete="CASCADE"), nullable=False),
    Column("scope", String(2000), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    # Set when the token is exchanged; a second use of a rotated token is reuse (RFC 9700 §4.14.2).
    Column("rotated_at", Float, nullable=True),
    Index("ix_refresh_tokens_grant", "grant_id"),
)

revocations = Table(
    "revocations",
    metadata,
    # An append-only feed that every process polls so revocation reaches all of them without a token lookup.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # "grant", "jti" or "client"
    Column("value", String(2000), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

browser_sessions = Table(
    "browser_sessions",
    metadata,
    Column("id_hash", LargeBinary, primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("auth_time", Float, nullable=False),
    Column("mfa", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # the absolute timeout
    # Idle timeout: the session ends idle_timeout seconds after last_seen_at (the roles' shortest session_duration).
    Column("last_seen_at", Float, nullable=True),
    Column("idle_timeout", Float, nullable=True),
    # The roles the session was started with: a change of roles (or of MFA state) means a new session id.
    Column("roles", JSON(none_as_null=True), nullable=True),
    # SHA-256 of the browser's User-Agent: a cookie replayed from another browser is refused.
    Column("user_agent_hash", LargeBinary, nullable=True),
    Column("client_id", String(2000), nullable=True),  # the OAuth client the sign-in was for, if any
    Index("ix_browser_sessions_user", "tenant_id", "user_id"),
)

group_mappings = Table(
    "group_mappings",
    metadata,
    # An IdP or directory group (a claim value, a SAML attribute value or an LDAP DN) and a role it confers.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("group_name", String(500), nullable=False),
    Column("role", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant_id", "group_name", "role"),
)

# -- audit (audit/): one hash chain and one RFC 6962 Merkle tree per tenant -------------------------------------

audit_events = Table(
    "audit_events",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),  # 0-based position in the tenant's chain: also its Merkle leaf index
    Column("event_id", String(32), nullable=False, unique=True),
    Column("time", Float, nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("classification", String(64), nullable=False),
    Column("subject", String(200), nullable=True),  # the data subject whose key encrypts the personal fields
    Column("body", LargeBinary, nullable=True),  # canonical JSON; NULL once purged by retention
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),  # SHA-256(prev_hash || body)
    PrimaryKeyConstraint("tenant_id", "seq"),
    # No index on subject: erasure destroys a key and never looks events up, and the index cost the writer a third
    # of its speed (bench/audit_bench.py). Time ranges (retention, reports) use this one.
    Index("ix_audit_events_time", "tenant_id", "time"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("tree_size", Integer, nullable=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("time", Float, nullable=False),
    Column("kind", String(16), nullable=False),  # "regular", or "tombstone" when events before purged_below went
    Column("purged_below", Integer, nullable=True),
    Column("prev_signature", LargeBinary, nullable=True),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),  # Ed25519 over the checkpoint's canonical statement
    PrimaryKeyConstraint("tenant_id", "number"),
)

audit_signing_keys = Table(
    "audit_signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),  # raw Ed25519 public key (32 bytes)
    Column("private_key", LargeBinary, nullable=False),  # encrypted under the master key
    Column("created_at", Float, nullable=False),
)

audit_subject_keys = Table(
    "audit_subject_keys",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("key", LargeBinary, nullable=True),  # encrypted under the master key; NULL once crypto-shredded
    Column("created_at", Float, nullable=False),
    Column("shredded_at", Float, nullable=True),
    PrimaryKeyConstraint("tenant_id", "subject"),
)

audit_sink_cursors = Table(
    "audit_sink_cursors",
    metadata,
    Column("sink", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("next_seq", Integer, nullable=False),  # the first event this sink has not yet received
    PrimaryKeyConstraint("sink", "tenant_id"),
)

audit_legal_holds = Table(
    "audit_legal_holds",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subject", String(200), nullable=False),  # "*" holds the whole tenant
    Column("reason", String(500), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant_id", "subject"),
)

# -- vault (vault/): envelope-encrypted secrets per (tenant, source) and the credential records that govern them ----

vault_secret_versions = Table(
    "vault_secret_versions",
    metadata,
    # One row per version of a secret (vault/envelope.py): the value under its own AES-256-GCM data key, and that
    # data key wrapped by a key-encryption key kept outside the database. Both bind (tenant, source, name, version)
    # as associated data, so a row copied anywhere else does not decrypt.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("source", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),  # format byte || 96-bit nonce || ciphertext and tag
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("kek_id", String(200), nullable=False),  # the KEK that wrapped the data key: what rotation rewraps
    Column("details", JSON, nullable=False),  # the version's metadata (kind, ...): never secret
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant_id", "source", "name", "version"),
)

vault_credentials = Table(
    "vault_credentials",
    metadata,
    # What may use a secret and how old it may grow (vault/service.py), whichever backend holds the value.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("source", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(32), nullable=False),  # api_key, client_secret, refresh_token, password, header, ...
    Column("owner", String(200), nullable=True),  # who answers for it (rotation reminders)
    Column("bindings", JSON, nullable=False),  # names of the tenant's servers that may use it; [] = none may
    Column("user_id", String(36), nullable=True),  # a per-user credential: usable only on this user's requests
    Column("max_age", Float, nullable=True),  # seconds; NULL: the kind's default (vault.max_age_days)
    Column("rotation", JSON(none_as_null=True), nullable=True),  # how `vault rotate` renews it, if it can
    Column("health", String(16), nullable=False),  # "ok" or "unhealthy"
    Column("health_reason", String(500), nullable=True),  # e.g. "re-consent needed"
    Column("created_at", Float, nullable=False),
    Column("rotated_at", Float, nullable=False),  # when the current value was set: the age rotation checks
    PrimaryKeyConstraint("tenant_id", "source", "name"),
)

# -- cost (cost/): one row per LLM request or telemetry report, appended off the request path ---------------------

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(32), primary_key=True),  # random, made by the writer
    Column("tenant_id", String(64), nullable=False),  # no foreign key: an append-only log, like audit_events
    Column("at", Float, nullable=False),
    Column("user_id", String(200), nullable=True),  # the token's subject, or the user telemetry names
    Column("team", String(128), nullable=True),  # from the roles at the time (cost/teams.py)
    Column("client_id", String(2000), nullable=True),
    Column("model", String(200), nullable=False),  # the model served
    Column("requested_model", String(200), nullable=True),  # set when routing rewrote the request's model
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cache_creation_input_tokens", Integer, nullable=False),  # every cache write, both lifetimes
    Column("cache_creation_1h_input_tokens", Integer, nullable=False),  # of which written for one hour
    Column("cache_read_input_tokens", Integer, nullable=False),
    Column("web_search_requests", Integer, nullable=False),
    # List cost in billionths of a dollar: integers sum exactly in SQL on both backends (a NUMERIC on SQLite is a
    # float); a price of up to three decimals per million tokens costs a whole number of them per token.
    Column("cost_nanousd", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("source", String(16), nullable=False),  # "proxy" or "telemetry"
    Column("request_id", String(200), nullable=True),
    Column("session_id", String(200), nullable=True),
    Column("complete", Boolean, nullable=False),  # false: a response cut off mid-stream
    Index("ix_usage_records_time", "tenant_id", "at"),
    Index("ix_usage_records_user", "tenant_id", "user_id", "at"),
    Index("ix_usage_records_team", "tenant_id", "team", "at"),
)

llm_virtual_keys = Table(
    "llm_virtual_keys",
    metadata,
    Column("id", String(36), primary_key=True),  # what listings and revocation name; never the key
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("digest", LargeBinary, nullable=False, unique=True),  # HMAC-SHA256 of the key, master-key subkey
    Column("name", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Index("ix_llm_virtual_keys_tenant_user", "tenant_id", "user_id"),
)

# -- single sign-on (sso/): who a federated sign-in is, what was seen once, and what a directory last said ----------

federated_identities = Table(
    "federated_identities",
    metadata,
    # An IdP's stable id for a person (OIDC `sub`, SAML NameID, LDAP entry) and the local account it signs in as.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
    PrimaryKeyConstraint("tenant_id", "provider", "subject"),
    Index("ix_federated_identities_user", "tenant_id", "user_id"),
)

seen_identifiers = Table(
    "seen_identifiers",
    metadata,
    # Identifiers good for one use until they expire (a SAML assertion ID, an ID-JAG `jti`), kept as SHA-256 digests:
    # the primary key makes a second use fail on every replica at once.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant_id", "kind", "digest"),
    Index("ix_seen_identifiers_expires_at", "expires_at"),
)

directory_cache = Table(
    "directory_cache",
    metadata,
    # What an LDAP directory last said about a user, so a directory that is down does not lock out someone it
    # vouched for within the provider's cache TTL. The password, when kept, is an argon2id hash.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("username", String(500), nullable=False),
    Column("user_dn", String(1000), nullable=False),
    Column("email", String(500), nullable=True),
    Column("groups", JSON, nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("refreshed_at", Float, nullable=False),
    PrimaryKeyConstraint("tenant_id", "provider", "username"),
)

# -- SCIM (scim/): the provisioning endpoint's bearer token, and what an IdP pushed beyond the users table -----------

scim_tokens = Table(
    "scim_tokens",
    metadata,
    # One bearer token per tenant, kept as HMAC-SHA256 under a master-key subkey: never the token.
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("digest", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

scim_users = Table(
    "scim_users",
    metadata,
    # The SCIM attributes of a user an IdP provisioned (RFC 7643 §4.1) besides userName and active, which live in
    # the users table.
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("external_id", String(500), nullable=True),
    Column("resource", JSON, nullable=False),
    Column("version", Integer, nullable=False),  # meta.version (RFC 7644 §3.14)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_scim_users_tenant", "tenant_id"),
)

scim_groups = Table(
    "scim_groups",
    metadata,
    # A pushed group; its displayName is a group name of the tenant's group mappings.
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("display_name", String(500), nullable=False),
    Column("external_id", String(500), nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("tenant_id", "display_name"),
)

scim_group_members = Table(
    "scim_group_members",
    metadata,
    Column("group_id", String(36), ForeignKey("scim_groups.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("group_id", "user_id"),
    Index("ix_scim_group_members_user", "user_id"),
)
