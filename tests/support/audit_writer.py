"""A process that writes audit events as fast as it can until it is killed (the crash test's victim).

    python -m tests.support.audit_writer DATA_DIR

It starts writing when a line arrives on stdin, so that a test can start the next writer (Python takes most of a
second to start) while the previous one still runs. Several tasks write concurrently, so the log group-commits
batches; each prints the id of every event whose `record_durably` returned (= acknowledged) on a line of its own,
flushed at once, so whatever the test read before the kill was acknowledged. Fire-and-forget events and signed
checkpoints are mixed in, so that a kill can land in the middle of any kind of write.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from chamberlain.audit.checkpoints import AuditSigner, Checkpointer
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database

WRITERS = 8
CHECKPOINT_EVERY = 0.05  # seconds


def event(writer: int, number: int, tenant: str) -> AuditEvent:
    return AuditEvent(
        action=Action.CREDENTIAL_READ,
        outcome="success",
        tenant=tenant,
        actor=Actor("user", f"user-{writer}"),
        target=f"server:upstream-{number % 5}",
        personal={"source_ip": f"127.0.0.{writer}"},
    )


async def write_durably(log: AuditLog, writer: int, tenant: str) -> None:
    number = 0
    while True:
        acknowledged = event(writer, number, tenant)
        await log.record_durably(acknowledged)
        sys.stdout.write(acknowledged.id + "\n")
        sys.stdout.flush()
        log.record(event(writer, -number, tenant))  # not acknowledged: may be lost, must never break the chain
        number += 1


async def checkpoint_forever(checkpointer: Checkpointer, tenant: str) -> None:
    while True:
        await asyncio.sleep(CHECKPOINT_EVERY)
        await checkpointer.checkpoint(tenant)


async def main(data_dir: Path) -> None:
    sys.stdin.readline()
    settings = load_settings(data_dir=data_dir)
    database = create_database(settings.effective_database_url)
    master_key = load_master_key(data_dir)
    log = AuditLog(database, master_key, settings.audit)
    checkpointer = Checkpointer(database, await AuditSigner.load_or_create(database, master_key))
    await log.start()
    tasks = [write_durably(log, writer, settings.tenant) for writer in range(WRITERS)]
    await asyncio.gather(*tasks, checkpoint_forever(checkpointer, settings.tenant))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
