"""`chamberlain audit`: verify the log, prove an event is in it, sign checkpoints, erase a person, hold and purge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chamberlain.audit.checkpoints import AuditSigner, Checkpointer, key_id_of
from chamberlain.audit.checkpoints import public_keys as stored_public_keys
from chamberlain.audit.events import Action
from chamberlain.audit.privacy import SubjectKeys
from chamberlain.audit.proofs import ProofUnavailable, check_proof_document, inclusion_proof_document
from chamberlain.audit.reader import tenants_with_events
from chamberlain.audit.retention import lift_hold, place_hold, purge_expired
from chamberlain.audit.verify import Verification, verify_tenant
from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    console,
    fail,
    initialised_store,
    record_admin_change,
    run,
    settings_from,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.dlp.compliance import retention_days
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.tenancy.effective import load_effective_config

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant (default: every one for verify, else the configured one).")
]


@app.command("verify")
def verify(
    tenant: TenantOption = None,
    public_key_hex: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Trust only this published Ed25519 key (hex); without it, the keys in the store are trusted.",
        ),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Check the chain, the Merkle tree and the signed checkpoints; name the first bad record. Exit 1 if any."""
    settings = settings_from(data_dir, config)
    pinned: dict[str, bytes] | None = None
    if public_key_hex is not None:
        try:
            key = bytes.fromhex(public_key_hex)
        except ValueError:
            fail("--public-key must be the key in hex, as `chamberlain audit public-key` prints it")
        # Someone able to write the store could add a key of their own and re-sign a rewritten log.
        pinned = {key_id_of(key): key}

    async def check() -> list[Verification]:
        async with initialised_store(settings) as database:
            keys = pinned if pinned is not None else await stored_public_keys(database)
            tenants = [tenant] if tenant else await tenants_with_events(database)
            return [await verify_tenant(database, name, keys) for name in tenants]

    results = run(check())
    for result in results:
        if result.ok:
            console.print(f"{result.tenant}: [green]ok[/] ({result.records} records, {result.checkpoints} checkpoints)")
        else:
            assert result.problem is not None
            console.print(f"{result.tenant}: [bold red]FAILED[/] {result.problem.message}", highlight=False)
    if not results:
        console.print("the audit log is empty")
    if any(not result.ok for result in results):
        raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Sign a checkpoint of every tenant's log now."""
    settings = settings_from(data_dir, config)

    async def sign() -> list[str]:
        async with initialised_store(settings) as database:
            checkpointer = Checkpointer(database, await _signer(database, settings))
            signed = []
            for name in await tenants_with_events(database):
                made = await checkpointer.checkpoint(name)
                if made is not None:
                    signed.append(f"{name}: checkpoint {made.number} over {made.tree_size} records")
            return signed

    for line in run(sign()) or ["nothing new to sign"]:
        console.print(line)


@app.command("public-key")
def public_key(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the checkpoint signing key (Ed25519, hex), to publish where verifiers can find it."""
    settings = settings_from(data_dir, config)

    async def load() -> tuple[str, bytes]:
        async with initialised_store(settings) as database:
            signer = await _signer(database, settings)
            return signer.key_id, signer.public_key

    key_id, key = run(load())
    console.print(f"key id {key_id}\ned25519 {key.hex()}")


@app.command("proof")
def proof(
    event_id: Annotated[str, typer.Argument(help="The event's id.")],
    output: Annotated[Path | None, typer.Option("--output", help="Write the proof to this file.")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Print an inclusion proof for one event, checkable without the database (`audit check-proof`)."""
    settings = settings_from(data_dir, config)

    async def build() -> dict[str, object]:
        async with initialised_store(settings) as database:
            try:
                return await inclusion_proof_document(database, event_id)
            except ProofUnavailable as problem:
                fail(str(problem))

    text = json.dumps(run(build()), indent=2)
    if output is None:
        console.print_json(text)
    else:
        output.write_text(text + "\n")
        console.print(f"wrote {output}")


@app.command("check-proof")
def check_proof(
    proof_file: Annotated[Path, typer.Argument(help="A proof written by `audit proof`.")],
    public_key_hex: Annotated[str, typer.Option("--public-key", help="The published Ed25519 key, hex.")],
) -> None:
    """Check an inclusion proof offline against the published public key. Exit 1 if it does not hold."""
    try:
        document = json.loads(proof_file.read_text())
        key = bytes.fromhex(public_key_hex)
    except OSError as unreadable:
        fail(f"{proof_file}: {unreadable.strerror}")
    except ValueError:
        fail("the proof must be JSON and --public-key 64 hex digits")
    problems = check_proof_document(document, key) if isinstance(document, dict) else ["the proof is malformed"]
    if problems:
        for problem in problems:
            console.print(f"[bold red]invalid:[/] {problem}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]valid:[/] event {document['event_id']} is record {document['seq']} of the signed log")


@app.command("erase")
def erase(
    subject: Annotated[str, typer.Argument(help="The data subject (a user id) whose personal fields to erase.")],
    tenant: TenantOption = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """GDPR Art. 17: destroy the subject's key; their personal fields become unreadable, the log still verifies."""
    settings = settings_from(data_dir, config)
    where = tenant or settings.tenant

    async def shred() -> bool:
        async with initialised_store(settings) as database:
            master_key = load_master_key(settings.data_dir)
            async with database.begin() as connection:
                shredded = await SubjectKeys(master_key).shred(connection, where, subject)
            await record_admin_change(
                database, settings, target=f"subject:{subject}", action=Action.AUDIT_ERASURE, tenant=where
            )
            return shredded

    if run(shred()):
        console.print(f"erased the personal fields of {subject} in the audit log of {where}")
    else:
        console.print(f"{subject} had no personal fields in the audit log of {where} (recorded the request)")


@app.command("hold")
def hold(
    subject: Annotated[str, typer.Argument(help="A data subject, or '*' for the whole tenant.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (a case reference).")],
    tenant: TenantOption = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Place a legal hold: retention purges none of the subject's (or tenant's) events until it is lifted."""
    settings = settings_from(data_dir, config)
    where = tenant or settings.tenant

    async def place() -> None:
        async with initialised_store(settings) as database:
            await record_admin_change(
                database, settings, target=f"legal_hold:{subject}", after={"reason": reason}, tenant=where
            )
            await place_hold(database, where, subject, reason)

    run(place())
    console.print(f"legal hold placed on {subject} in {where}")


@app.command("release")
def release(
    subject: Annotated[str, typer.Argument(help="The subject, or '*'.")],
    tenant: TenantOption = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Lift a legal hold."""
    settings = settings_from(data_dir, config)
    where = tenant or settings.tenant

    async def lift() -> bool:
        async with initialised_store(settings) as database:
            await record_admin_change(
                database, settings, target=f"legal_hold:{subject}", before={"held": True}, tenant=where
            )
            return await lift_hold(database, where, subject)

    if not run(lift()):
        fail(f"there is no legal hold on {subject} in {where}")
    console.print(f"legal hold on {subject} in {where} lifted")


@app.command("purge")
def purge(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Apply retention now: empty expired events' bodies under a signed tombstone (legal holds respected)."""
    settings = settings_from(data_dir, config)

    async def apply() -> list[str]:
        async with initialised_store(settings) as database:
            checkpointer = Checkpointer(database, await _signer(database, settings))
            lines = []
            for name in await tenants_with_events(database):
                modes = (await load_effective_config(database, settings, name)).dlp.compliance
                audit = settings.audit.retained_for(retention_days(modes))
                result = await purge_expired(database, checkpointer, audit, name)
                lines.append(f"{name}: purged {result.purged} events")
            return lines

    for line in run(apply()) or ["the audit log is empty"]:
        console.print(line)


async def _signer(database: Database, settings: Settings) -> AuditSigner:
    """The store's checkpoint signing key (made on first use)."""
    return await AuditSigner.load_or_create(database, load_master_key(settings.data_dir))
