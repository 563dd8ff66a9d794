"""OpenBao (or HashiCorp Vault) as a vault backend: KV v2 keeps the secrets, transit is the key-encryption key.

One `OpenBaoConnection` holds the token and keeps its lease alive; `OpenBaoBackend` (SecretBackend) and `TransitKek`
(KeyEncryptionKey) share it. hvac is synchronous, so every call runs on a worker thread (`asyncio.to_thread`) and
the event loop never waits on the network. The connection goes to the configured URL only: no redirects (a standby
node's 307 would carry the token elsewhere), no proxies or .netrc from the environment, plain http on loopback only.

Errors become BackendUnavailable, SecretNotFound or SecretUnreadable with messages written here: the hvac exception
(whose text is the server's answer) is dropped, never chained, so neither the token nor a value can reach a log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]

from chamberlain.tenancy.config import check_tenant_id
from chamberlain.vault.backend import (
    BackendUnavailable,
    SecretNotFound,
    SecretRef,
    SecretUnreadable,
    SecretVersion,
    VaultError,
    check_name,
)
from chamberlain.vault.openbao_settings import OpenBaoSettings, read_token

logger = logging.getLogger(__name__)

# Renew when a third of the lease is left: two more tries fit before it lapses if OpenBao is briefly away.
_RENEW_AT = 2 / 3
_RETRY_SECONDS = 5.0
_KEK_CONTEXT_LABEL = b"chamberlain vault data key\x00"  # domain-separates the transit contexts (never empty)
_TRANSIT_CIPHERTEXT = re.compile(rb"vault:v([0-9]{1,9}):[A-Za-z0-9+/]+={0,2}")


def _described(problem: Exception, what: str) -> VaultError:
    """Our own words for an hvac or requests failure: its text (the server's answer, a URL) is never reused."""
    if isinstance(problem, hvac.exceptions.InvalidPath):
        return SecretNotFound(f"OpenBao has nothing to {what}")
    if isinstance(problem, hvac.exceptions.InvalidRequest):
        return _Refused(f"OpenBao refused to {what} (bad request)")
    if isinstance(problem, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return BackendUnavailable(
            f"OpenBao denied permission to {what}: the token's policy does not allow it, or the token expired or "
            "was revoked"
        )
    if isinstance(problem, hvac.exceptions.VaultDown | hvac.exceptions.VaultNotInitialized):
        return BackendUnavailable(f"OpenBao is sealed or not initialised: cannot {what}")
    if isinstance(problem, hvac.exceptions.RateLimitExceeded):
        return BackendUnavailable(f"OpenBao rate-limited the request to {what}")
    if isinstance(problem, hvac.exceptions.VaultError):
        return BackendUnavailable(f"OpenBao failed to {what} ({type(problem).__name__})")
    return BackendUnavailable(f"OpenBao cannot be reached to {what} ({type(problem).__name__})")


class _Refused(BackendUnavailable):
    """HTTP 400: for transit decrypt and rewrap this means the ciphertext or its context does not authenticate."""


class OpenBaoConnection:
    """An authenticated hvac client whose token lease is renewed in the background and revoked on close."""

    def __init__(self, settings: OpenBaoSettings, token: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        # Every connection parameter is given, so hvac takes none from VAULT_ADDR, VAULT_CACERT or VAULT_CLIENT_CERT.
        cert: tuple[str, str] | str | bool = False
        if settings.client_cert is not None:
            cert = str(settings.client_cert)
            if settings.client_key is not None:
                cert = (str(settings.client_cert), str(settings.client_key))
        self._client = hvac.Client(
            url=settings.url,
            token=token,
            cert=cert,
            verify=str(settings.ca_file) if settings.ca_file else True,
            timeout=settings.timeout,
            allow_redirects=False,
            namespace=settings.namespace,
        )
        # requests would otherwise take HTTPS_PROXY/ALL_PROXY and .netrc from the environment: the token then
        # reaches a proxy, or a .netrc Authorization header reaches OpenBao. Only the configured URL is contacted.
        self._client.session.trust_env = False
        self._client.session.proxies = {}
        self._expires_at: float | None = None  # clock() time; None: the token never expires (or not yet looked up)
        self._increment: int | None = None  # seconds asked for at each renewal: the token's own TTL
        self._renewable = False
        self._capped = False  # warned that the token's max TTL stops renewals
        self._renewal: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"OpenBaoConnection({self.settings.url!r})"

    @classmethod
    async def open(cls, settings: OpenBaoSettings, environ: Mapping[str, str] | None = None) -> OpenBaoConnection:
        """Reads the token (environment or file), checks it and starts renewing its lease."""
        connection = cls(settings, read_token(settings, environ))
        try:
            await connection.start()
        except BaseException:
            await connection.close(revoke=False)
            raise
        return connection

    async def start(self) -> None:
        """Looks the token up (its TTL and whether it renews) and, for a token that expires, renews it when two
        thirds of each lease have passed, until close()."""
        await self._look_up()
        if self._renewal is None and self._renewable and self._expires_at is not None:
            self._renewal = asyncio.create_task(self._keep_alive(), name="openbao-token-renewal")

    @property
    def expires_in(self) -> float | None:
        """Seconds left on the token's lease as last seen; None for a token without expiry."""
        return None if self._expires_at is None else max(0.0, self._expires_at - self._clock())

    async def call(self, what: str, operation: Callable[[Any], object]) -> object:
        """Runs `operation(hvac_client)` on a worker thread. `what` completes "cannot {what}" in error messages:
        it names the operation and the secret's reference, never a value."""
        if self._closed:
            raise BackendUnavailable(f"the OpenBao connection is closed: cannot {what}")
        failure: VaultError
        try:
            return await asyncio.to_thread(operation, self._client)
        except (hvac.exceptions.VaultError, OSError) as problem:  # requests' exceptions are OSErrors
            failure = _described(problem, what)
        # Raised outside the except block, so the hvac exception is not even the new one's __context__.
        raise failure

    async def json(self, what: str, operation: Callable[[Any], object]) -> dict[str, Any]:
        """An operation answered with a JSON body (HTTP 200). hvac returns the bare response for anything else, such
        as a redirect it was told not to follow: that is a failure, not an empty answer."""
        result = await self.call(what, operation)
        if isinstance(result, dict):
            return result
        raise BackendUnavailable(f"OpenBao gave an unexpected answer to {what} ({_status(result)})")

    async def done(self, what: str, operation: Callable[[Any], object]) -> None:
        """An operation answered with no body (HTTP 204) or a JSON one."""
        result = await self.call(what, operation)
        if isinstance(result, dict):
            return
        status = getattr(result, "status_code", None)
        if not isinstance(status, int) or not 200 <= status < 300:
            raise BackendUnavailable(f"OpenBao gave an unexpected answer to {what} ({_status(result)})")

    async def renew(self) -> float:
        """Renews the token's lease now, asking for its own TTL again; the seconds the lease now has."""
        increment = self._increment
        answer = await self.json(
            "renew the token", lambda client: client.auth.token.renew_self(increment=increment or None)
        )
        auth = answer.get("auth") or {}
        ttl = int(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._expires_at = self._clock() + ttl if ttl > 0 else None
        if increment and ttl < increment and not self._capped:
            # The token's max TTL caps it: renewals cannot extend it past that. A token file (an Agent's sink)
            # will hold a fresh token by then; otherwise the operator must hand the gateway a new one.
            self._capped = True
            logger.warning("the OpenBao token reaches its maximum TTL in %d s and cannot be renewed past it", ttl)
        return float(ttl)

    async def close(self, *, revoke: bool | None = None) -> None:
        """Stops renewing and revokes the token (unless `revoke_token_on_close` is false), so a copy of it taken
        from this process's memory is worthless afterwards. Idempotent."""
        if self._closed:
            return
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None
        revoke = self.settings.revoke_token_on_close if revoke is None else revoke
        if revoke:
            try:
                await self.done("revoke the token", lambda client: client.auth.token.revoke_self())
            except VaultError as problem:
                logger.warning("could not revoke the OpenBao token on close: %s", problem)
        self._closed = True
        await asyncio.to_thread(self._client.adapter.close)

    async def _look_up(self) -> None:
        answer = await self.json("look up the token", lambda client: client.auth.token.lookup_self())
        data = answer.get("data") or {}
        ttl = int(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._increment = int(data.get("creation_ttl") or 0) or None
        self._expires_at = self._clock() + ttl if ttl > 0 else None
        self._capped = False

    async def _keep_alive(self) -> None:
        try:
            await self._renew_until_closed()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Our own code failed: say so, since nothing awaits this task to see it. No token or value is in it.
            logger.exception("OpenBao token renewal stopped")

    async def _renew_until_closed(self) -> None:
        while self._renewable:
            left = self.expires_in
            if left is None:
                return
            if left <= 0:
                # Expired: only a new token helps, and only a token file can bring one.
                if self.settings.token_file is None:
                    logger.error(
                        "the OpenBao token has expired: vault operations fail until the gateway restarts with a new one"
                    )
                    return
                await asyncio.sleep(_RETRY_SECONDS)
                await self._adopt_token_file()
                continue
            total = self._increment or left
            # Renew once two thirds of the lease have gone, measured from the lease's own length.
            await asyncio.sleep(max(0.0, left - total * (1 - _RENEW_AT)))
            try:
                ttl = await self.renew()
            except VaultError as problem:
                logger.warning("OpenBao token renewal failed: %s", problem)
                ttl = None
            if ttl is not None and (self._increment is None or ttl >= self._increment):
                continue
            # Failed, or capped by the token's max TTL: a token file may hold a fresh token; otherwise retry
            # (at least a second apart, so a lease running out never turns into a busy loop).
            if await self._adopt_token_file():
                continue
            left = self.expires_in
            await asyncio.sleep(max(1.0, min(_RETRY_SECONDS, (left or 0.0) / 3)))

    async def _adopt_token_file(self) -> bool:
        """After a failed renewal: takes the token file's token if it changed (an Agent re-authenticated)."""
        if self.settings.token_file is None:
            return False
        try:
            token = await asyncio.to_thread(read_token, self.settings)
        except BackendUnavailable as problem:
            logger.warning("%s", problem)
            return False
        if token == self._client.token:
            return False
        self._client.token = token
        try:
            await self._look_up()
        except VaultError as problem:
            logger.warning("the token now in %s does not work either: %s", self.settings.token_file, problem)
            return False
        logger.info("took the new OpenBao token from %s", self.settings.token_file)
        return True


def _status(result: object) -> str:
    status = getattr(result, "status_code", None)
    return f"HTTP {status}" if isinstance(status, int) else type(result).__name__


def _created_at(value: object) -> float:
    """KV v2's RFC 3339 times carry nanoseconds; datetime takes microseconds."""
    if not isinstance(value, str) or not value:
        return 0.0
    text = value.replace("Z", "+00:00")
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


class OpenBaoBackend:
    """SecretBackend on one KV v2 mount: `{prefix}/tenants/{tenant}/{source}/{name}`, one KV secret per vault
    secret, its KV versions the vault's versions. Each KV version holds {"value": base64, "metadata": {...}}.

    Every path is built from a tenant id (`check_tenant_id`) and source and name (`check_name`), checked again here
    even though SecretRef checked them, so no '/', '..' or '%' ever reaches the path: a name cannot climb out of
    its (tenant, source) namespace. OpenBao policies can confine a token to one tenant's subtree as well.
    """

    def __init__(self, connection: OpenBaoConnection) -> None:
        self._connection = connection
        self._mount = connection.settings.kv_mount
        self._prefix = connection.settings.path_prefix
        self._max_versions = connection.settings.max_versions

    def __repr__(self) -> str:
        return f"OpenBaoBackend({self._connection.settings.url!r}, mount={self._mount!r})"

    def _folder(self, tenant: str, source: str | None = None) -> str:
        check_tenant_id(tenant)
        folder = f"{self._prefix}/tenants/{tenant}"
        return folder if source is None else f"{folder}/{check_name(source, 'source')}"

    def path(self, ref: SecretRef) -> str:
        """The KV path of a secret (below the mount)."""
        return f"{self._folder(ref.tenant, ref.source)}/{check_name(ref.name, 'secret name')}"

    async def put(self, ref: SecretRef, value: bytes, *, metadata: Mapping[str, str] | None = None) -> SecretVersion:
        path, mount = self.path(ref), self._mount
        entry = {"value": base64.b64encode(value).decode("ascii"), "metadata": dict(metadata or {})}
        answer = await self._connection.json(
            f"store {ref}",
            lambda client: client.secrets.kv.v2.create_or_update_secret(path, secret=entry, mount_point=mount),
        )
        data = answer.get("data") or {}
        version = int(data.get("version") or 0)
        if version == 1:
            # KV v2 would keep only 10 versions (the mount's default) and silently destroy older ones.
            keep = self._max_versions
            await self._connection.done(
                f"set how many versions of {ref} to keep",
                lambda client: client.secrets.kv.v2.update_metadata(path, max_versions=keep, mount_point=mount),
            )
        return SecretVersion(ref, version, _created_at(data.get("created_time")), dict(metadata or {}))

    async def get(self, ref: SecretRef, version: int | None = None) -> bytes:
        value, _ = await self._read(ref, version)
        return value

    async def _read(self, ref: SecretRef, version: int | None) -> tuple[bytes, SecretVersion]:
        path, mount = self.path(ref), self._mount
        label = f"read {ref}" if version is None else f"read {ref} version {version}"
        try:
            answer = await self._connection.json(
                label,
                lambda client: client.secrets.kv.v2.read_secret_version(
                    path, version=version, mount_point=mount, raise_on_deleted_version=True
                ),
            )
        except SecretNotFound:
            what = f"{ref}" if version is None else f"version {version} of {ref}"
            raise SecretNotFound(f"no secret {what}") from None
        body = answer.get("data") or {}
        entry, kv_metadata = body.get("data"), body.get("metadata") or {}
        try:
            if not isinstance(entry, dict):
                raise TypeError
            value = base64.b64decode(entry["value"], validate=True)
            metadata = {str(key): str(item) for key, item in (entry.get("metadata") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            raise SecretUnreadable(f"{ref}: the stored entry is not a Chamberlain secret") from None
        return value, SecretVersion(
            ref, int(kv_metadata.get("version") or 0), _created_at(kv_metadata.get("created_time")), metadata
        )

    async def _kept(self, ref: SecretRef) -> list[tuple[int, float]]:
        """(version, created_at) of every version neither deleted nor destroyed, oldest first."""
        path, mount = self.path(ref), self._mount
        try:
            answer = await self._connection.json(
                f"read the versions of {ref}",
                lambda client: client.secrets.kv.v2.read_secret_metadata(path, mount_point=mount),
            )
        except SecretNotFound:
            return []
        versions = (answer.get("data") or {}).get("versions") or {}
        kept = [
            (int(number), _created_at(info.get("created_time")))
            for number, info in versions.items()
            if not info.get("destroyed") and not info.get("deletion_time")
        ]
        return sorted(kept)

    async def versions(self, ref: SecretRef) -> list[SecretVersion]:
        # KV v2 metadata is per secret, not per version: each version's own metadata is read from its entry.
        found: list[SecretVersion] = []
        for number, _ in await self._kept(ref):
            try:
                _, version = await self._read(ref, number)
            except SecretNotFound:
                continue  # purged between the two reads
            found.append(version)
        return found

    async def _children(self, folder: str, *, folders: bool) -> list[str]:
        mount = self._mount
        try:
            answer = await self._connection.json(
                f"list {folder}", lambda client: client.secrets.kv.v2.list_secrets(folder, mount_point=mount)
            )
        except SecretNotFound:
            return []
        keys = [str(key) for key in (answer.get("data") or {}).get("keys") or []]
        if folders:
            return sorted(key[:-1] for key in keys if key.endswith("/"))
        return sorted(key for key in keys if not key.endswith("/"))

    async def delete(self, ref: SecretRef) -> bool:
        if not await self._exists(ref):
            return False
        path, mount = self.path(ref), self._mount
        await self._connection.done(
            f"delete {ref}",
            lambda client: client.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point=mount),
        )
        return True

    async def _exists(self, ref: SecretRef) -> bool:
        path, mount = self.path(ref), self._mount
        try:
            await self._connection.json(
                f"look up {ref}", lambda client: client.secrets.kv.v2.read_secret_metadata(path, mount_point=mount)
            )
        except SecretNotFound:
            return False
        return True

    async def purge(self, ref: SecretRef, *, keep: int) -> int:
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        kept = [number for number, _ in await self._kept(ref)]
        drop = kept[: max(0, len(kept) - keep)]
        if not drop:
            return 0
        path, mount = self.path(ref), self._mount
        # destroy, not delete: KV v2's delete is a soft delete that `undelete` reverses; destroy removes the data.
        await self._connection.done(
            f"destroy old versions of {ref}",
            lambda client: client.secrets.kv.v2.destroy_secret_versions(path, versions=drop, mount_point=mount),
        )
        return len(drop)

    async def list(self, tenant: str, source: str | None = None) -> list[SecretVersion]:
        sources = [source] if source is not None else await self._children(self._folder(tenant), folders=True)
        found: list[SecretVersion] = []
        for each in sources:
            for name in await self._children(self._folder(tenant, each), folders=False):
                try:
                    ref = SecretRef(tenant, each, name)
                except ValueError:
                    logger.warning("skipping an entry under %s/%s whose name Chamberlain would not write", tenant, each)
                    continue
                try:
                    _, latest = await self._read(ref, None)
                except SecretNotFound:
                    continue  # only deleted or destroyed versions left
                found.append(latest)
        return found


class TransitKek:
    """KeyEncryptionKey on OpenBao's transit engine: data keys are encrypted by a key that never leaves OpenBao.

    Associated data is bound through key derivation. Transit's encrypt and decrypt take `associated_data`, but its
    rewrap endpoint does not (OpenBao 2.7: a rewrap of such a ciphertext fails authentication), and rewrap is how
    a rotation re-encrypts data keys without them leaving OpenBao. So the transit key is a derived key (`derived`,
    HKDF-SHA256) and `context` = a fixed label + the associated data: each context has its own AES-256-GCM key, a
    wrapped key presented with other associated data fails to authenticate, and rewrap takes the context.

    key_id is "openbao-transit:{mount}/{key}:v{latest version}". After `rotate()` new wraps use the new version;
    data keys wrapped under older versions still unwrap (down to `min_decryption_version`) and `rewrap` moves them
    to the latest version inside OpenBao. `retire_before(version)` then makes older ciphertexts unusable.
    """

    def __init__(self, connection: OpenBaoConnection, *, version: int) -> None:
        self._connection = connection
        self._mount = connection.settings.transit_mount
        self._name = connection.settings.transit_key
        self._version = version

    def __repr__(self) -> str:
        return f"TransitKek({self.key_id!r})"

    @classmethod
    async def open(cls, connection: OpenBaoConnection, *, create: bool | None = None) -> TransitKek:
        """Reads the key's latest version, creating the key first if asked (and allowed by the token's policy).
        Refuses a key that is not a derived aes256-gcm96 key: it could not bind the associated data."""
        settings = connection.settings
        create = settings.create_transit_key if create is None else create
        mount, name = settings.transit_mount, settings.transit_key
        try:
            info = await cls._read_key(connection)
        except SecretNotFound:
            if not create:
                raise BackendUnavailable(
                    f"the transit key {mount}/{name} does not exist: create it (type aes256-gcm96, derived=true) "
                    "or set vault.openbao.create_transit_key"
                ) from None
            await connection.done(
                f"create the transit key {mount}/{name}",
                lambda client: client.secrets.transit.create_key(
                    name, key_type="aes256-gcm96", derived=True, exportable=False, mount_point=mount
                ),
            )
            info = await cls._read_key(connection)
        if info.get("type") != "aes256-gcm96" or not info.get("derived"):
            raise BackendUnavailable(
                f"the transit key {mount}/{name} must be a derived aes256-gcm96 key (it is {info.get('type')}, "
                f"derived={bool(info.get('derived'))}): its context binds each data key to its secret"
            )
        return cls(connection, version=int(info.get("latest_version") or 1))

    @staticmethod
    async def _read_key(connection: OpenBaoConnection) -> dict[str, Any]:
        mount, name = connection.settings.transit_mount, connection.settings.transit_key
        answer = await connection.json(
            f"read the transit key {mount}/{name}",
            lambda client: client.secrets.transit.read_key(name, mount_point=mount),
        )
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def key_id(self) -> str:
        return f"openbao-transit:{self._mount}/{self._name}:v{self._version}"

    @property
    def version(self) -> int:
        return self._version

    @staticmethod
    def version_of(wrapped: bytes) -> int:
        """The transit key version a wrapped key was made with ("vault:vN:..."); SecretUnreadable if not one."""
        match = _TRANSIT_CIPHERTEXT.fullmatch(wrapped)
        if match is None:
            raise SecretUnreadable("the wrapped data key is not a transit ciphertext")
        return int(match.group(1))

    @staticmethod
    def _context(associated_data: bytes) -> str:
        return base64.b64encode(_KEK_CONTEXT_LABEL + associated_data).decode("ascii")

    async def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        mount, name = self._mount, self._name
        plaintext, context = base64.b64encode(data_key).decode("ascii"), self._context(associated_data)
        answer = await self._connection.json(
            f"wrap a data key with {mount}/{name}",
            lambda client: client.secrets.transit.encrypt_data(name, plaintext, context=context, mount_point=mount),
        )
        return self._ciphertext(answer, "wrap")

    def _ciphertext(self, answer: Mapping[str, Any], what: str) -> bytes:
        data = answer.get("data") or {}
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str):
            raise BackendUnavailable(f"OpenBao's transit {what} answered without a ciphertext")
        # A rotation by another client shows here first; key_id follows it.
        self._version = max(self._version, int(data.get("key_version") or 0))
        return ciphertext.encode("ascii")

    async def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        self.version_of(wrapped)
        mount, name = self._mount, self._name
        ciphertext, context = wrapped.decode("ascii"), self._context(associated_data)
        try:
            answer = await self._connection.json(
                f"unwrap a data key with {mount}/{name}",
                lambda client: client.secrets.transit.decrypt_data(
                    name, ciphertext, context=context, mount_point=mount
                ),
            )
        except _Refused:
            raise self._unreadable() from None
        plaintext = (answer.get("data") or {}).get("plaintext")
        try:
            return base64.b64decode(plaintext or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise BackendUnavailable("OpenBao's transit decrypt answered without a plaintext") from None

    def _unreadable(self) -> SecretUnreadable:
        return SecretUnreadable(
            f"the data key does not unwrap with transit key {self._mount}/{self._name}: it was altered, its "
            "associated data differs, it was wrapped by another key, or its key version was retired"
        )

    async def rewrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """The same data key wrapped under the key's latest version; the data key never leaves OpenBao."""
        self.version_of(wrapped)
        mount, name = self._mount, self._name
        ciphertext, context = wrapped.decode("ascii"), self._context(associated_data)
        try:
            answer = await self._connection.json(
                f"rewrap a data key with {mount}/{name}",
                lambda client: client.secrets.transit.rewrap_data(name, ciphertext, context=context, mount_point=mount),
            )
        except _Refused:
            raise self._unreadable() from None
        return self._ciphertext(answer, "rewrap")

    async def rotate(self) -> str:
        """A new key version for new wraps; older ones still unwrap until retired. The new key_id."""
        mount, name = self._mount, self._name
        await self._connection.done(
            f"rotate the transit key {mount}/{name}",
            lambda client: client.secrets.transit.rotate_key(name, mount_point=mount),
        )
        info = await self._read_key(self._connection)
        self._version = max(self._version, int(info.get("latest_version") or 0))
        return self.key_id

    async def retire_before(self, version: int) -> None:
        """Refuses to unwrap ciphertexts of versions older than `version` (transit's min_decryption_version):
        after every data key was rewrapped, a copy of an old wrapped key is no longer usable."""
        if not 1 <= version <= self._version:
            raise ValueError(f"version must be between 1 and the latest ({self._version})")
        mount, name = self._mount, self._name
        await self._connection.done(
            f"retire versions of the transit key {mount}/{name} before {version}",
            lambda client: client.secrets.transit.update_key_configuration(
                name, min_decryption_version=version, mount_point=mount
            ),
        )
