"""model visibility: public (demo, admin-registered) or private (a user's fine-tunes)

Revision ID: 0003_model_visibility
Revises: 0002_leases
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_model_visibility"
down_revision = "0002_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("visibility", sa.String(length=10), server_default="public", nullable=False)
        )
    # models with an owner are fine-tunes made by a run: only their owner sees them
    op.execute("UPDATE models SET visibility = 'private' WHERE owner_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("visibility")
