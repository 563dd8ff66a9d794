"""The Redis at 127.0.0.1:6379 for tests: a URL and a key prefix of their own, every key under it deleted afterwards.

Tests needing it skip when it is unreachable, except under CI=true, where they fail: CI must run them.
Use the `redis_target` fixture (import it into the test module) or the `redis_prefix()` context manager.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = os.environ.get("CHAMBERLAIN_TEST_REDIS", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class RedisTarget:
    url: str
    prefix: str  # every key a test writes starts with it (the rate limiter's key_prefix)

    def stored_keys(self) -> list[str]:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            return sorted(client.scan_iter(match=f"{self.prefix}*", count=1000))
        finally:
            client.close()


def redis_reachable() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> None:
    if redis_reachable():
        return
    if IN_CI:
        pytest.fail(f"Redis at {REDIS_HOST}:{REDIS_PORT} is required in CI but is not reachable")
    pytest.skip(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}")


def delete_prefixed(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        # The prefix includes a random part, so the pattern cannot reach another test's (or anyone's) keys.
        for batch in _batches(client.scan_iter(match=f"{prefix}*", count=1000), 500):
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


def _batches(keys: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def redis_prefix(label: str = "test") -> Iterator[RedisTarget]:
    require_redis()
    target = RedisTarget(REDIS_URL, f"chamberlain-test-{label}-{secrets.token_hex(6)}")
    try:
        yield target
    finally:
        delete_prefixed(target.url, target.prefix)


@pytest.fixture
def redis_target() -> Iterator[RedisTarget]:
    with redis_prefix() as target:
        yield target


def require_redis_server() -> None:
    """Tests that stop and start a Redis run their own (never the shared one): skipped without redis-server, but
    failed under CI=true."""
    if shutil.which("redis-server") is not None:
        return
    if IN_CI:
        pytest.fail("redis-server is required in CI")
    pytest.skip("redis-server is not installed")


REDIS_START_WAIT = 10.0  # seconds for a private redis-server to listen


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on loopback (never the shared one on 6379), stopped afterwards."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + REDIS_START_WAIT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start listening"
            time.sleep(0.02)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)
