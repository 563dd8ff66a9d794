"""Revocations reach every replica at once through Redis pub/sub; the store's feed stays the source of truth.

A revocation (a token or grant revoked, a client revoked, a user disabled or signed out everywhere, a replayed code
or refresh token) is appended to the `revocations` feed table by whoever makes it, which then applies the feed in
its own process (AppState.sync_revocations) and, when `redis_url` is set, announces it here: one PUBLISH on
CHANNEL whose message is only the feed's highest id in this process, as decimal text. It names no tenant, user,
client or token: anyone able to read the channel learns that something was revoked and nothing else. Every replica
subscribes; on a message whose id is above what it has applied, it reads the feed from the store at once, instead
of at its next poll.

The message is a hint, never the revocation itself: a replica only trusts the feed it reads from the store, so a
forged or lost message can at worst cost a query or a second. The poll of AppState._refresh_forever (every
REVOCATION_POLL_INTERVAL, half a second) stays as the fallback, so:
- Redis down or unreachable: the announcement fails within `timeout` (logged once per outage, the request that
  revoked is not failed: the revocation is already in the store), the subscriber retries every `retry_interval`,
  and revocations reach the other replicas by the poll, within a second.
- Announcements made while a subscriber was disconnected are lost to it; it reads the feed once when it
  (re)subscribes, so nothing waits for the next poll either.
- Revocations written outside a running gateway (the CLI) are announced once by `announce_revocations`.

The publisher is the project's pipelined client (net/resp.py, as the rate limiter and budgets use, same URL
rules). A subscribed connection receives pushes instead of replies, which that client's reply queue does not model,
so the subscriber is redis-py's asyncio client, off every request's path, built from the same parsed address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chamberlain.net.resp import RedisAddress, RedisPool, RespError, parse_redis_url
from chamberlain.store.database import Database
from chamberlain.store.grants import Revocation, latest_revocation_id

logger = logging.getLogger(__name__)

CHANNEL: Final = "chamberlain:revocations"  # one for every tenant: the message says nothing of whose it is
_MAX_MESSAGE: Final = 20  # digits: a feed id is a 64-bit integer; anything longer is not ours
SETTLE_SECONDS: Final = 10.0  # far longer than a revocation's transaction (one INSERT, milliseconds)

# Called with the feed id announced, or None after (re)subscribing (announcements may have been missed).
OnAnnouncement = Callable[[int | None], Awaitable[None]]


class RevocationFanout:
    """One per process: announces this process's revocations and hands the others' to `on_announcement`."""

    def __init__(
        self,
        redis_url: str | None,
        on_announcement: OnAnnouncement,
        *,
        channel: str = CHANNEL,
        timeout: float = 0.5,
        retry_interval: float = 1.0,
    ) -> None:
        self._on_announcement = on_announcement
        self._channel = channel
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._address: RedisAddress | None = None
        self._publisher: RedisPool | None = None
        if redis_url is not None:
            self._address = parse_redis_url(redis_url)  # refuses anything but redis://, rediss:// and unix://
            self._publisher = RedisPool(self._address, connect_timeout=timeout, timeout=timeout)
        self._listener: asyncio.Task[None] | None = None
        self._publish_failing = False
        self._subscribe_failing = False
        self.subscribed = asyncio.Event()  # set while the subscription is live (tests and benches wait on it)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    async def start(self) -> None:
        if self._address is not None and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen_forever(), name="revocation-fanout")

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._publisher is not None:
            await self._publisher.aclose()

    async def announce(self, feed_id: int) -> None:
        """Tells the other replicas the feed holds entries up to `feed_id`. Never raises: with Redis unreachable
        the poll carries the revocation, already in the store."""
        if self._publisher is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._publisher.execute("PUBLISH", self._channel, feed_id)
        except (RespError, TimeoutError) as error:
            if not self._publish_failing:
                self._publish_failing = True
                logger.warning(
                    "could not announce a revocation through Redis (%s); other replicas apply it at their next poll",
                    error or type(error).__name__,
                )
            return
        if self._publish_failing:
            self._publish_failing = False
            logger.info("revocations are announced through Redis again")

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, OSError, TimeoutError) as error:
                # The messages say who failed where (host and port), never the password.
                if not self._subscribe_failing:
                    self._subscribe_failing = True
                    logger.warning(
                        "not subscribed to revocations in Redis (%s): applying them by polling the store until it is "
                        "back",
                        type(error).__name__,
                    )
            except Exception:  # a bug here must not end the fan-out for the life of the process
                logger.exception("the revocation subscriber failed; subscribing again")
            finally:
                self.subscribed.clear()
            await asyncio.sleep(self._retry_interval)

    async def _listen(self) -> None:
        client = self._client()
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(self._channel)
                self.subscribed.set()
                if self._subscribe_failing:
                    self._subscribe_failing = False
                    logger.info("subscribed to revocations in Redis again")
                await self._deliver(None)  # what was announced while we were not listening
                async for message in pubsub.listen():
                    feed_id = _feed_id(message)
                    if feed_id is not None:
                        await self._deliver(feed_id)
        finally:
            await client.aclose()

    async def _deliver(self, feed_id: int | None) -> None:
        try:
            await self._on_announcement(feed_id)
        except Exception:  # the store may blip: the poll retries, and the subscription must outlive it
            logger.exception("could not apply announced revocations")

    def _client(self) -> aioredis.Redis:
        address = self._address
        assert address is not None
        options: dict[str, Any] = {
            "db": address.db,
            "username": address.username,
            "password": address.password,
            "socket_connect_timeout": self._timeout,
            # Reads block until a message comes: no socket timeout, but a PING every 30 s finds a dead connection.
            "socket_timeout": None,
            "health_check_interval": 30,
            "retry": Retry(NoBackoff(), 0),  # _listen_forever retries, at its own pace
        }
        if address.path is not None:
            return aioredis.Redis(unix_socket_path=address.path, **options)
        # rediss://: the system's trust store and host name checks, as net/resp.py.
        return aioredis.Redis(
            host=address.host or "", port=address.port, ssl=address.tls, ssl_check_hostname=address.tls, **options
        )


async def announce_revocations(redis_url: str | None, database: Database, *, channel: str = CHANNEL) -> None:
    """For a process that revokes without serving (the CLI): one announcement of the feed's head, so the
    replicas apply it at once rather than at their next poll. Never raises, as `announce`."""
    if redis_url is None:
        return
    fanout = RevocationFanout(redis_url, _not_listening, channel=channel)
    try:
        await fanout.announce(await latest_revocation_id(database))
    finally:
        await fanout.aclose()


async def _not_listening(feed_id: int | None) -> None:
    """Announcements to a process that only publishes (it never subscribes)."""


def _feed_id(message: dict[str, Any] | None) -> int | None:
    """The id a message announces, or None for anything else (we trust only the store, but refuse junk early)."""
    if message is None or message.get("type") != "message":
        return None
    data = message.get("data")
    if not isinstance(data, bytes) or not 0 < len(data) <= _MAX_MESSAGE or not data.isdigit():
        return None
    return int(data)


class FeedCursor:
    """Where the next read of the revocations feed starts (`floor`: read the entries after it).

    Feed ids are taken from a sequence at INSERT, but transactions commit in any order: id 11 may be visible while
    id 10 is not yet. Reading strictly after the highest id seen would then skip 10 for ever, and every replica
    that read at that moment would accept a revoked token until it expires (failing open). Pulls are more frequent
    with the fan-out (one per announcement), so the window is met more often. Instead reads start after the
    highest id first seen at least `settle` seconds ago: the newer ones are read again (a few rows, applied again
    harmlessly) until no transaction could still be committing an id below them.
    """

    def __init__(self, settle: float = SETTLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = 0
        self._settle = settle
        self._clock = clock
        self._recent: dict[int, float] = {}  # id above the floor -> when this process first read it

    def seen(self, entries: Iterable[Revocation]) -> None:
        now = self._clock()
        for entry in entries:
            if entry.id > self.floor:
                self._recent.setdefault(entry.id, now)
        settled = [entry_id for entry_id, first in self._recent.items() if now - first >= self._settle]
        if settled:
            self.floor = max(settled)
            self._recent = {entry_id: first for entry_id, first in self._recent.items() if entry_id > self.floor}
