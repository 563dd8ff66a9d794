"""`chamberlain init`: create the store, the master and signing keys, the bootstrap admin and the demo server."""

from __future__ import annotations

import secrets

from chamberlain.cli.common import ConfigFile, DataDir, console, run, settings_from
from chamberlain.crypto.master_key import load_master_key
from chamberlain.crypto.signing_keys import generate_signing_key
from chamberlain.demo.server import DEMO_SERVER_NAME
from chamberlain.identity.passwords import hash_password
from chamberlain.settings import Settings
from chamberlain.store import keys as key_store
from chamberlain.store.database import create_database, current_revision, migrate
from chamberlain.store.servers import ServerRepository
from chamberlain.store.tenants import ensure_tenant
from chamberlain.store.users import UserRepository

BOOTSTRAP_ADMIN = "admin"
DEMO_SCOPES = ("mcp:tools",)


def init(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Create the store, keys and a bootstrap admin (prints the admin's one-time password)."""
    settings = settings_from(data_dir, config)
    password = run(initialise(settings))
    if password is None:
        console.print(f"Already initialised in [bold]{settings.data_dir}[/]; the store is up to date.")
        return
    console.print(f"Initialised Chamberlain in [bold]{settings.data_dir}[/].")
    console.print(f"Bootstrap admin: [bold]{BOOTSTRAP_ADMIN}[/]  one-time password: [bold]{password}[/]")
    console.print("Keep it now: it is not stored anywhere and will not be shown again.")


async def initialise(settings: Settings) -> str | None:
    """Idempotent: returns the bootstrap admin's password when this call created the store, else None."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    master_key = load_master_key(settings.data_dir, create=True)
    database = create_database(settings.effective_database_url)
    try:
        fresh = await current_revision(database) is None
        await migrate(database)
        await ensure_tenant(database, settings.tenant)
        if not fresh:
            return None
        await key_store.rotate(
            database,
            generate_signing_key(settings.tokens.signing_algorithm, master_key),
            keep_verifying_for=settings.tokens.access_token_ttl + 60,
        )
        password = secrets.token_urlsafe(18)
        users = UserRepository(database, settings.tenant)
        await users.add(BOOTSTRAP_ADMIN, hash_password(password), ("admin",), must_change_password=True)
        if settings.demo_server:
            await ServerRepository(database, settings.tenant, master_key).add_built_in(DEMO_SERVER_NAME, DEMO_SCOPES)
        return password
    finally:
        await database.dispose()
