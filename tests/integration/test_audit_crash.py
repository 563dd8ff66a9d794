"""Issue 7, acceptance 2: a writer killed with SIGKILL at random moments, 20 times over the same store; after every
kill the log verifies and every event whose `record_durably` had returned is in the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.verify import verify_tenant
from chamberlain.cli.main import app
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.store.schema import audit_checkpoints, audit_events

KILLS = 20
REPOSITORY = Path(__file__).resolve().parents[2]


class Writer:
    """One tests/support/audit_writer.py process. It starts (imports) at once and writes once told to go."""

    def __init__(self, data_dir: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.audit_writer", str(data_dir)],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "CHAMBERLAIN_DATA_DIR": str(data_dir)},
        )

    def go(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(b"go\n")
        self._process.stdin.flush()

    def acknowledged_until_killed(self, rng: random.Random) -> list[str]:
        """Lets the writer run for 0.1–0.5 s after its first acknowledgement, SIGKILLs it, and returns the ids it
        acknowledged (complete lines only: a line the kill cut short was never fully printed)."""
        stdout = self._process.stdout
        assert stdout is not None
        first = stdout.readline()
        assert first.endswith(b"\n"), "the writer stopped before acknowledging anything"
        rest: list[bytes] = []
        # Keep the pipe drained, so the writer never waits on a full pipe when it should be under load.
        reader = threading.Thread(target=lambda: rest.append(stdout.read()))
        reader.start()
        time.sleep(rng.uniform(0.1, 0.5))
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        reader.join(timeout=10)
        lines = (first + b"".join(rest)).split(b"\n")
        return [line.decode() for line in lines[:-1]]  # the last element is "" or a line the kill cut short

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


async def check_store(data_dir: Path, acknowledged: set[str]) -> tuple[int, int]:
    settings = load_settings(data_dir=data_dir, environ={})
    database = create_database(settings.effective_database_url)
    try:
        result = await verify_tenant(database, settings.tenant, await public_keys(database))
        assert result.ok, result.problem
        async with database.connect() as connection:
            stored = set((await connection.scalars(select(audit_events.c.event_id))).all())
            checkpoints = len((await connection.scalars(select(audit_checkpoints.c.number))).all())
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged events are missing, e.g. {sorted(missing)[:3]}"
        return len(stored), checkpoints
    finally:
        await database.dispose()


def test_the_log_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    initialised = CliRunner().invoke(app, ["init", "--data-dir", str(tmp_path)], env={})
    assert initialised.exit_code == 0, initialised.output
    rng = random.Random()  # random moments, as the acceptance asks; a failure prints the run's counts below
    acknowledged: set[str] = set()
    with contextlib.ExitStack() as cleanup:
        writer = Writer(tmp_path)
        cleanup.callback(writer.close)
        for kill in range(KILLS):
            writer.go()
            successor = Writer(tmp_path)  # starts up while this one runs; writes nothing before it is told
            cleanup.callback(successor.close)
            acknowledged.update(writer.acknowledged_until_killed(rng))
            stored, checkpoints = asyncio.run(check_store(tmp_path, acknowledged))
            print(f"kill {kill + 1}: {len(acknowledged)} acknowledged, {stored} stored, {checkpoints} checkpoints")
            writer = successor
    assert len(acknowledged) > KILLS, "the writer acknowledged almost nothing: the test did not test much"
