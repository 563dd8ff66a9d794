"""What the CLI keeps in the OS keychain for one issuer (vault/keychain.py: service "chamberlain:{issuer}"):

- `client`: the client_id this CLI registered there (public, but kept with the rest so one place holds the login);
- `grant.{resource}`: the refresh token of one resource's grant, with the endpoints needed to use it;
- `access.{resource}`: the last access token and when it expires, so that `chamberlain token` called by several
  processes in a row refreshes once. A JWT sits in its own entry because Windows' credential store holds at most
  2,560 bytes per entry.

Refresh tokens rotate on every use and presenting a rotated one revokes the whole grant (OAuth 2.1 §4.3.1,
RFC 9700 §4.14.2). Two `chamberlain token` processes refreshing at once would do just that, so refreshes take a
per-issuer file lock and re-read the keychain once they hold it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from chamberlain.client.oauth import ClientError
from chamberlain.vault.keychain import KeychainStore

CLIENT_ENTRY = "client"
# Claude Code reuses an apiKeyHelper's value for five minutes (CLAUDE_CODE_API_KEY_HELPER_TTL_MS), so a token handed
# out must outlive that; a cached token with less left is replaced. Short-lived tokens are replaced at half-life.
REUSE_HORIZON = 300.0
_READABLE_PATH = re.compile(r"[A-Za-z0-9_-]{1,40}(?:/[A-Za-z0-9_-]{1,40}){0,2}")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredGrant:
    resource: str
    client_id: str
    refresh_token: str
    scope: str | None
    token_endpoint: str
    revocation_endpoint: str | None

    def __repr__(self) -> str:
        return f"StoredGrant({self.resource!r}, client_id={self.client_id!r})"


@dataclass(frozen=True, slots=True)
class CachedAccessToken:
    resource: str
    access_token: str
    expires_at: float
    lifetime: float

    def __repr__(self) -> str:
        return f"CachedAccessToken({self.resource!r}, expires_at={self.expires_at})"

    def usable(self, now: float) -> bool:
        return self.expires_at - now >= min(REUSE_HORIZON, self.lifetime / 2)


def entry_suffix(issuer: str, resource: str) -> str:
    """A keychain account name for `resource`: its path under the issuer when that reads well and cannot collide
    ("llm", "mcp.demo"), else a digest of the whole URL."""
    path = resource[len(issuer) + 1 :] if resource.startswith(issuer + "/") else ""
    if _READABLE_PATH.fullmatch(path):
        return path.replace("/", ".")  # no "." in the path, so distinct paths give distinct names
    return hashlib.sha256(resource.encode()).hexdigest()[:32]


class Credentials:
    """One issuer's entries. Values are JSON objects; an entry that does not parse is reported, never guessed at."""

    def __init__(self, store: KeychainStore) -> None:
        self.store = store
        self.issuer = store.issuer

    def client_id(self) -> str | None:
        entry = self._read(CLIENT_ENTRY)
        client_id = entry.get("client_id") if entry else None
        return client_id if isinstance(client_id, str) else None

    def save_client_id(self, client_id: str) -> None:
        self._write(CLIENT_ENTRY, {"client_id": client_id})

    def forget_client(self) -> None:
        self.store.delete(CLIENT_ENTRY)

    def grant(self, resource: str) -> StoredGrant | None:
        grant = self._parsed(self._grant_entry(resource), _stored_grant)
        # Names are derived from the resource; the stored URL settles which resource an entry is for.
        return grant if grant is not None and grant.resource == resource else None

    def save_grant(self, grant: StoredGrant) -> None:
        self._write(self._grant_entry(grant.resource), asdict(grant))

    def access_token(self, resource: str) -> CachedAccessToken | None:
        cached = self._parsed(self._access_entry(resource), _cached_access_token)
        return cached if cached is not None and cached.resource == resource else None

    def save_access_token(self, cached: CachedAccessToken) -> None:
        self._write(self._access_entry(cached.resource), asdict(cached))

    def forget_access_token(self, resource: str) -> None:
        self.store.delete(self._access_entry(resource))

    def forget(self, resource: str) -> None:
        """Deletes the access token first: a cached token must never outlive the grant it came from."""
        self.forget_access_token(resource)
        self.store.delete(self._grant_entry(resource))

    def _grant_entry(self, resource: str) -> str:
        return f"grant.{entry_suffix(self.issuer, resource)}"

    def _access_entry(self, resource: str) -> str:
        return f"access.{entry_suffix(self.issuer, resource)}"

    def _read(self, name: str) -> dict[str, Any] | None:
        text = self.store.get(name)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise self._unreadable(name)
        return value

    def _parsed(self, name: str, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """The entry `name` as `parse` builds it, None when there is none. Every kind of entry is read this way so
        that a missing or mistyped field (ValueError from the field readers below) is reported, never guessed at."""
        entry = self._read(name)
        if entry is None:
            return None
        try:
            return parse(entry)
        except ValueError:
            raise self._unreadable(name) from None

    def _unreadable(self, name: str) -> ClientError:
        return ClientError(
            f"the keychain entry {name!r} of {self.store.service} is not one this CLI wrote: sign in again"
        )

    def _write(self, name: str, value: dict[str, Any]) -> None:
        self.store.set(name, json.dumps(value, separators=(",", ":")))


def _stored_grant(entry: dict[str, Any]) -> StoredGrant:
    return StoredGrant(
        resource=_text(entry, "resource"),
        client_id=_text(entry, "client_id"),
        refresh_token=_text(entry, "refresh_token"),
        scope=_optional_text(entry, "scope"),
        token_endpoint=_text(entry, "token_endpoint"),
        revocation_endpoint=_optional_text(entry, "revocation_endpoint"),
    )


def _cached_access_token(entry: dict[str, Any]) -> CachedAccessToken:
    return CachedAccessToken(
        resource=_text(entry, "resource"),
        access_token=_text(entry, "access_token"),
        expires_at=_number(entry, "expires_at"),
        lifetime=_number(entry, "lifetime"),
    )


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(key)
    return value


def _optional_text(entry: dict[str, Any], key: str) -> str | None:
    return None if entry.get(key) is None else _text(entry, key)


def _number(entry: dict[str, Any], key: str) -> float:
    value = entry.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(key)
    return float(value)


@contextlib.contextmanager
def refresh_lock(issuer: str) -> Iterator[None]:
    """Holds an exclusive lock for `issuer` among this user's processes; the OS drops it if the holder dies."""
    path = _lock_directory() / f"refresh-{hashlib.sha256(issuer.encode()).hexdigest()[:16]}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _lock(descriptor)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _lock_directory() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home())
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = base / "chamberlain"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


if sys.platform == "win32":
    import msvcrt

    def _lock(descriptor: int) -> None:
        while True:
            try:
                msvcrt.locking(descriptor, msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises
                return
            except OSError:
                time.sleep(0.1)

else:
    import fcntl

    def _lock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
