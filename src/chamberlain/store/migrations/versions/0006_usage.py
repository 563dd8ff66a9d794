"""usage: one record per LLM request or telemetry report (tokens, list cost, who), for budgets and cost reports

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("client_id", sa.String(2000), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_1h_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.Integer(), nullable=False),
        sa.Column("web_search_requests", sa.Integer(), nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
    )
    op.create_index("ix_usage_records_time", "usage_records", ["tenant_id", "at"])
    op.create_index("ix_usage_records_user", "usage_records", ["tenant_id", "user_id", "at"])
    op.create_index("ix_usage_records_team", "usage_records", ["tenant_id", "team", "at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_team", table_name="usage_records")
    op.drop_index("ix_usage_records_user", table_name="usage_records")
    op.drop_index("ix_usage_records_time", table_name="usage_records")
    op.drop_table("usage_records")
