"""security: failed-login counter, lockout and revocation epoch of each account; national ids kept masked

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("locked_until", telenet.store.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("auth_epoch", sa.Integer(), server_default="0", nullable=False))
    # The last four characters of a national id rebuild it with the birth date and the region: keep the
    # check character only (telenet.domain.patients.last4).
    op.execute(
        "UPDATE patients SET national_id_last4 = '***' || substr(national_id_last4, 4, 1) "
        "WHERE national_id_last4 IS NOT NULL AND national_id_last4 NOT LIKE '***%'"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("auth_epoch")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")
