"""tenants: per-tenant configuration, clients keyed by (tenant, client_id), session idle timeouts and bindings,
group-to-role mappings

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("config", sa.JSON(), nullable=True))
    op.add_column("tenants", sa.Column("updated_at", sa.Float(), nullable=True))
    # Nothing references clients by foreign key, so SQLite's copy-and-swap of the table loses nothing.
    with op.batch_alter_table("clients", recreate="always") as batch:
        batch.drop_constraint("pk_clients", type_="primary")
        batch.create_primary_key("pk_clients", ["tenant_id", "client_id"])
    for column in (
        sa.Column("last_seen_at", sa.Float(), nullable=True),
        sa.Column("idle_timeout", sa.Float(), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=True),
        sa.Column("user_agent_hash", sa.LargeBinary(), nullable=True),
        sa.Column("client_id", sa.String(2000), nullable=True),
    ):
        op.add_column("browser_sessions", column)
    op.create_index("ix_browser_sessions_user", "browser_sessions", ["tenant_id", "user_id"])
    op.create_table(
        "group_mappings",
        sa.Column(
            "tenant_id",
            sa.String(64),
            sa.ForeignKey("tenants.id", name="fk_group_mappings_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("group_name", sa.String(500), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "group_name", "role", name="pk_group_mappings"),
    )


def downgrade() -> None:
    op.drop_table("group_mappings")
    op.drop_index("ix_browser_sessions_user", "browser_sessions")
    for name in ("client_id", "user_agent_hash", "roles", "idle_timeout", "last_seen_at"):
        op.drop_column("browser_sessions", name)
    with op.batch_alter_table("clients", recreate="always") as batch:
        batch.drop_constraint("pk_clients", type_="primary")
        batch.create_primary_key("pk_clients", ["client_id"])
    op.drop_column("tenants", "updated_at")
    op.drop_column("tenants", "config")
