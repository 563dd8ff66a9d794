"""oauth/revocation_fanout.py: announcements through the real Redis at 127.0.0.1:6379 (a channel of each test's
own), and the feed cursor against PostgreSQL committing feed ids out of order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from chamberlain.oauth.revocation_fanout import FeedCursor, RevocationFanout, announce_revocations
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.store.grants import GrantRepository, Revocation, latest_revocation_id, revocations_since
from chamberlain.store.schema import revocations
from tests.conftest import require_postgres
from tests.support.databases import migrate_url, opened_database
from tests.support.redis import REDIS_URL, own_redis, require_redis, require_redis_server
from tests.support.server import free_port, postgres_database, random_name

PASSWORD = "fanout-secret-password"
WAIT = 10.0  # seconds: a bound for "it never came", not a measure of speed


class Recorder:
    def __init__(self) -> None:
        self.received: list[int | None] = []
        self.changed = asyncio.Event()

    async def __call__(self, feed_id: int | None) -> None:
        self.received.append(feed_id)
        self.changed.set()

    async def next_id(self) -> int | None:
        async with asyncio.timeout(WAIT):
            while not self.received:
                self.changed.clear()
                await self.changed.wait()
        return self.received.pop(0)


@contextlib.asynccontextmanager
async def fanout(channel: str, recorder: Recorder, url: str = REDIS_URL) -> AsyncIterator[RevocationFanout]:
    subject = RevocationFanout(url, recorder, channel=channel, timeout=0.5, retry_interval=0.05)
    await subject.start()
    try:
        yield subject
    finally:
        await subject.aclose()


async def test_an_announcement_reaches_every_subscribed_replica() -> None:
    require_redis()
    channel = random_name("revocations")
    first, second = Recorder(), Recorder()
    async with fanout(channel, first) as one, fanout(channel, second) as two:
        for subject in (one, two):
            async with asyncio.timeout(WAIT):
                await subject.subscribed.wait()
        # On subscribing, each reads the feed once: announcements sent before may have been missed.
        assert await first.next_id() is None
        assert await second.next_id() is None
        await one.announce(41)
        assert await first.next_id() == 41  # the announcer hears itself too; it skips ids it has applied
        assert await second.next_id() == 41


async def test_the_cli_announces_what_it_revoked(tmp_path: Path) -> None:
    # A process that revokes without serving (chamberlain sessions/clients revoke) announces the feed's head once.
    require_redis()
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await migrate_url(url)
    channel = random_name("revocations")
    recorder = Recorder()
    async with opened_database(url) as database, fanout(channel, recorder) as replica:
        async with asyncio.timeout(WAIT):
            await replica.subscribed.wait()
        assert await recorder.next_id() is None
        await GrantRepository(database, "default").revoke_access_token("jti-1", time.time() + 60)
        await announce_revocations(REDIS_URL, database, channel=channel)
        head = await latest_revocation_id(database)
        assert head > 0
        assert await recorder.next_id() == head
        await announce_revocations(None, database, channel=channel)  # no Redis configured: nothing, no error


async def test_junk_on_the_channel_is_ignored() -> None:
    require_redis()
    channel = random_name("revocations")
    recorder = Recorder()
    publisher = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with fanout(channel, recorder) as subject:
            async with asyncio.timeout(WAIT):
                await subject.subscribed.wait()
            assert await recorder.next_id() is None
            # Only a decimal feed id is a hint worth a query; the store stays the truth either way.
            for junk in (b"", b"-1", b"1e3", b"grant:abc", b"9" * 21, b"\xff"):
                await publisher.publish(channel, junk)
            await publisher.publish(channel, b"7")
            assert await recorder.next_id() == 7
            assert recorder.received == []
    finally:
        await publisher.aclose()


async def test_redis_unreachable_never_fails_the_revoking_request(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="chamberlain.oauth.revocation_fanout"):
        async with fanout(random_name("revocations"), recorder, unreachable) as subject:
            await subject.announce(1)
            await subject.announce(2)
            await asyncio.sleep(0.2)  # a few subscription attempts fail meanwhile
            assert not subject.subscribed.is_set()
    assert recorder.received == []
    announce_warnings = [r for r in caplog.records if "could not announce" in r.getMessage()]
    assert len(announce_warnings) == 1, "an outage is logged once, not per revocation"
    subscribe_warnings = [r for r in caplog.records if "not subscribed" in r.getMessage()]
    assert len(subscribe_warnings) == 1
    assert all(PASSWORD not in record.getMessage() for record in caplog.records), "a Redis password in the logs"


def test_without_redis_nothing_is_announced_or_subscribed() -> None:
    subject = RevocationFanout(None, Recorder())
    assert not subject.enabled


def test_a_non_redis_url_is_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RevocationFanout("http://127.0.0.1:6379/", Recorder())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entry(entry_id: int) -> Revocation:
    return Revocation(entry_id, "grant", f"grant-{entry_id}", time.time() + 600)


def test_the_feed_cursor_rereads_recent_ids_until_they_settle() -> None:
    clock = Clock()
    cursor = FeedCursor(settle=10.0, clock=clock)
    cursor.seen([entry(3), entry(5)])
    assert cursor.floor == 0, "ids just read may still have uncommitted ids below them"
    clock.now += 9.0
    cursor.seen([entry(3), entry(5), entry(7)])
    assert cursor.floor == 0
    clock.now += 1.0
    cursor.seen([entry(3), entry(5), entry(7)])
    assert cursor.floor == 5, "3 and 5 were first seen 10 s ago; 7 only 1 s ago"
    clock.now += 9.0
    cursor.seen([])
    assert cursor.floor == 7


@pytest.mark.postgres
def test_a_revocation_committed_after_a_later_one_is_not_skipped() -> None:
    """PostgreSQL takes feed ids at INSERT; transactions commit in any order. A pull between the two commits sees
    the later id only; the earlier one must still be read by the next pull (the store poll, or an announcement)."""
    require_postgres()
    with postgres_database() as url:
        asyncio.run(migrate_url(url))
        asyncio.run(commit_out_of_order(url))


async def commit_out_of_order(url: str) -> None:
    def insert(grant_id: str) -> Any:
        now = time.time()
        return revocations.insert().values(kind="grant", value=grant_id, expires_at=now + 600, created_at=now)

    listed, cursor = RevocationList(), FeedCursor()
    async with opened_database(url) as database:
        async with database.begin() as slow:
            await slow.execute(insert("early"))  # takes the lower id, commits last
            async with database.begin() as fast:
                await fast.execute(insert("late"))
            entries = await revocations_since(database, cursor.floor)
            listed.apply(entries)
            cursor.seen(entries)
            assert [found.value for found in entries] == ["late"]
        # "early" is committed now. Reading after the highest id seen, as before, would miss it for ever:
        assert await revocations_since(database, listed.last_id) == []
        entries = await revocations_since(database, cursor.floor)
        listed.apply(entries)
        cursor.seen(entries)
    assert listed.is_revoked(grant_id="early", jti="-", tenant="default", client_id="-")
    assert listed.is_revoked(grant_id="late", jti="-", tenant="default", client_id="-")


async def test_after_a_redis_restart_the_subscriber_rereads_the_feed_and_hears_again() -> None:
    require_redis_server()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    channel = random_name("revocations")
    recorder = Recorder()
    async with fanout(channel, recorder, url) as subject:
        with own_redis(port):
            async with asyncio.timeout(WAIT):
                await subject.subscribed.wait()
            assert await recorder.next_id() is None
        # Redis is gone: announcing fails quietly, the subscription is lost, the store poll carries revocations.
        await subject.announce(5)
        with own_redis(port):
            # What was announced meanwhile is lost, so the feed is read once on resubscribing.
            assert await recorder.next_id() is None
            await subject.announce(6)
            assert await recorder.next_id() == 6
    assert recorder.received == []
