"""vault: envelope-encrypted secret versions and credential records (bindings, owner, max age, health)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_secret_versions",
        sa.Column(
            "tenant_id",
            sa.String(64),
            sa.ForeignKey("tenants.id", name="fk_vault_secret_versions_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "source", "name", "version", name="pk_vault_secret_versions"),
    )
    op.create_table(
        "vault_credentials",
        sa.Column(
            "tenant_id",
            sa.String(64),
            sa.ForeignKey("tenants.id", name="fk_vault_credentials_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("bindings", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("max_age", sa.Float(), nullable=True),
        sa.Column("rotation", sa.JSON(), nullable=True),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("health_reason", sa.String(500), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("rotated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "source", "name", name="pk_vault_credentials"),
    )


def downgrade() -> None:
    op.drop_table("vault_credentials")
    op.drop_table("vault_secret_versions")
