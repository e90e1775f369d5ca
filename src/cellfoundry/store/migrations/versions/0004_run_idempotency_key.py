"""idempotent submits: a run remembers its Idempotency-Key and request hash (one per owner)

Revision ID: 0004_run_idempotency_key
Revises: 0003_model_visibility
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_run_idempotency_key"
down_revision = "0003_model_visibility"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable columns and a unique index (NULLs never clash: runs without a key are many);
    # both are plain ALTER TABLE / CREATE INDEX on SQLite too, no copy of the runs table
    op.add_column("runs", sa.Column("idempotency_key", sa.String(length=255), nullable=True))
    op.add_column("runs", sa.Column("request_sha256", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_runs_owner_idempotency_key", "runs", ["owner_id", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_runs_owner_idempotency_key", table_name="runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("request_sha256")
        batch_op.drop_column("idempotency_key")
