"""single sign-on: federated identities, identifiers seen once, the directory cache

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _tenant(table: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", name=f"fk_{table}_tenant_id_tenants"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "federated_identities",
        _tenant("federated_identities"),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column(
            "user_id",
            sa.String(36),
            sa.ForeignKey("users.id", name="fk_federated_identities_user_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "provider", "subject", name="pk_federated_identities"),
    )
    op.create_index("ix_federated_identities_user", "federated_identities", ["tenant_id", "user_id"])
    op.create_table(
        "seen_identifiers",
        _tenant("seen_identifiers"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "digest", name="pk_seen_identifiers"),
    )
    op.create_index("ix_seen_identifiers_expires_at", "seen_identifiers", ["expires_at"])
    op.create_table(
        "directory_cache",
        _tenant("directory_cache"),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("username", sa.String(500), nullable=False),
        sa.Column("user_dn", sa.String(1000), nullable=False),
        sa.Column("email", sa.String(500), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("refreshed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "provider", "username", name="pk_directory_cache"),
    )


def downgrade() -> None:
    op.drop_table("directory_cache")
    op.drop_index("ix_seen_identifiers_expires_at", table_name="seen_identifiers")
    op.drop_table("seen_identifiers")
    op.drop_index("ix_federated_identities_user", table_name="federated_identities")
    op.drop_table("federated_identities")
