"""upstream servers: a server's configuration and encrypted secrets; the roles captured with a grant

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("servers", sa.Column("config", sa.JSON(), nullable=True))
    op.add_column("servers", sa.Column("secrets", sa.LargeBinary(), nullable=True))
    op.add_column("grants", sa.Column("roles", sa.JSON(), nullable=True))

    # A server registered by URL before this revision becomes the same server with every other setting at its
    # default; the built-in demo server (no URL) keeps a NULL config.
    servers = sa.table(
        "servers",
        sa.column("id", sa.String()),
        sa.column("url", sa.String()),
        sa.column("scopes", sa.JSON()),
        sa.column("config", sa.JSON()),
    )
    connection = op.get_bind()
    registered = connection.execute(
        sa.select(servers.c.id, servers.c.url, servers.c.scopes).where(servers.c.url.isnot(None))
    )
    for server_id, url, scopes in registered.all():
        connection.execute(
            servers.update().where(servers.c.id == server_id).values(config={"url": url, "scopes": scopes})
        )


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), not a batch copy: recreating `grants` on SQLite, whose
    # foreign keys are on, would cascade-delete every refresh token.
    op.drop_column("grants", "roles")
    op.drop_column("servers", "secrets")
    op.drop_column("servers", "config")
