"""SCIM: the provisioning token, provisioned users' attributes, pushed groups and their members

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _tenant(table: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", name=f"fk_{table}_tenant_id_tenants"),
        nullable=False,
    )


def _user(table: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "user_id",
        sa.String(36),
        sa.ForeignKey("users.id", name=f"fk_{table}_user_id_users", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "scim_tokens",
        _tenant("scim_tokens"),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_scim_tokens"),
    )
    op.create_table(
        "scim_users",
        _user("scim_users"),
        _tenant("scim_users"),
        sa.Column("external_id", sa.String(500), nullable=True),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_scim_users"),
    )
    op.create_index("ix_scim_users_tenant", "scim_users", ["tenant_id"])
    op.create_table(
        "scim_groups",
        sa.Column("id", sa.String(36), nullable=False),
        _tenant("scim_groups"),
        sa.Column("display_name", sa.String(500), nullable=False),
        sa.Column("external_id", sa.String(500), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scim_groups"),
        sa.UniqueConstraint("tenant_id", "display_name", name="uq_scim_groups_tenant_id"),
    )
    op.create_table(
        "scim_group_members",
        sa.Column(
            "group_id",
            sa.String(36),
            sa.ForeignKey("scim_groups.id", name="fk_scim_group_members_group_id_scim_groups", ondelete="CASCADE"),
            nullable=False,
        ),
        _user("scim_group_members"),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="pk_scim_group_members"),
    )
    op.create_index("ix_scim_group_members_user", "scim_group_members", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_scim_group_members_user", table_name="scim_group_members")
    op.drop_table("scim_group_members")
    op.drop_table("scim_groups")
    op.drop_index("ix_scim_users_tenant", table_name="scim_users")
    op.drop_table("scim_users")
    op.drop_table("scim_tokens")
