"""llm keys: per-user virtual keys for the LLM proxy, kept as keyed digests

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_virtual_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column(
            "tenant_id",
            sa.String(64),
            sa.ForeignKey("tenants.id", name="fk_llm_virtual_keys_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("users.id", name="fk_llm_virtual_keys_user_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_llm_virtual_keys"),
        sa.UniqueConstraint("digest", name="uq_llm_virtual_keys_digest"),
    )
    op.create_index("ix_llm_virtual_keys_tenant_user", "llm_virtual_keys", ["tenant_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_llm_virtual_keys_tenant_user", table_name="llm_virtual_keys")
    op.drop_table("llm_virtual_keys")
