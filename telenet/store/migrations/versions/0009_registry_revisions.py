"""registry history (every change an admin makes is a revision with its validity period), character sets per
AE title, the technician (OperatorsName) of a study for OBR-34

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = telenet.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registry_revisions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(length=200), nullable=False),
        sa.Column("object_path", sa.String(length=400), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("valid_from", _TS, nullable=False),
        sa.Column("valid_to", _TS, nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("changed", sa.JSON(), nullable=True),
        sa.Column("changed_at", _TS, nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "kind in ('institution','center','agreement','account')", name=op.f("ck_registry_revisions_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_revisions")),
        sa.UniqueConstraint("kind", "object_id", "revision", name="uq_registry_revisions_object_revision"),
    )
    op.create_index("ix_registry_revisions_open", "registry_revisions", ["kind", "valid_to"], unique=False)
    with op.batch_alter_table("institution_ae_titles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("charset", sa.String(length=16), nullable=True))
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operators_name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.drop_column("operators_name")
    with op.batch_alter_table("institution_ae_titles", schema=None) as batch_op:
        batch_op.drop_column("charset")
    op.drop_index("ix_registry_revisions_open", table_name="registry_revisions")
    op.drop_table("registry_revisions")
