"""security: failed-login counter, lockout and revocation epoch of each account; national ids kept masked;
audit append-only; peers of each institution (certificate fingerprints, networks)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("locked_until", telenet.store.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("auth_epoch", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("peer_cert_sha256", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("peer_networks", sa.JSON(), nullable=True))
    # The last four characters of a national id rebuild it with the birth date and the region: keep the
    # check character only (telenet.domain.patients.last4).
    op.execute(
        "UPDATE patients SET national_id_last4 = '***' || substr(national_id_last4, 4, 1) "
        "WHERE national_id_last4 IS NOT NULL AND national_id_last4 NOT LIKE '***%'"
    )

    # The audit trail becomes append-only in the database (the statements live with the model).
    from telenet.store.models.accounts import AUDIT_APPEND_ONLY_POSTGRESQL, AUDIT_APPEND_ONLY_SQLITE

    dialect = op.get_bind().dialect.name
    for statement in AUDIT_APPEND_ONLY_POSTGRESQL if dialect == "postgresql" else AUDIT_APPEND_ONLY_SQLITE:
        op.execute(statement)


def downgrade() -> None:
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.drop_column("peer_networks")
        batch_op.drop_column("peer_cert_sha256")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_no_truncate ON audit")
        op.execute("DROP TRIGGER IF EXISTS audit_no_change ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("auth_epoch")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")
