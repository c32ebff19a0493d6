"""consultation sessions: proposed/agreed time and phase, invited centers, the timeline; participants removable

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, telenet.store.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "consultations",
        sa.Column("request_id", _BIG, nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        _time("proposed_time"),
        sa.Column("proposed_by", sa.String(length=64), nullable=True),
        sa.Column("proposed_by_side", sa.String(length=16), nullable=True),
        _time("proposed_on"),
        _time("agreed_time"),
        sa.Column("agreed_by", sa.String(length=64), nullable=True),
        _time("agreed_on"),
        _time("started_at"),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        _time("opinion_at"),
        sa.Column("opinion_by", sa.String(length=64), nullable=True),
        _time("cancelled_at"),
        sa.Column("cancelled_by", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "phase in ('requested','proposed','scheduled','in_session','opinion','cancelled')",
            name=op.f("ck_consultations_phase"),
        ),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name=op.f("fk_consultations_request_id_requests")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_consultations")),
    )
    op.create_table(
        "consultation_centers",
        sa.Column("id", _BIG, autoincrement=True, nullable=False),
        sa.Column("request_id", _BIG, nullable=False),
        sa.Column("center_id", sa.Integer(), nullable=False),
        sa.Column("invited_by", sa.String(length=64), nullable=False),
        _time("invited_at", nullable=False),
        sa.Column("removed_by", sa.String(length=64), nullable=True),
        _time("removed_at"),
        sa.ForeignKeyConstraint(["center_id"], ["centers.id"], name=op.f("fk_consultation_centers_center_id_centers")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name=op.f("fk_consultation_centers_request_id_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consultation_centers")),
    )
    with op.batch_alter_table("consultation_centers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consultation_centers_request_id"), ["request_id"], unique=False)
    op.create_table(
        "consultation_steps",
        sa.Column("id", _BIG, autoincrement=True, nullable=False),
        sa.Column("request_id", _BIG, nullable=False),
        _time("at", nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("by_name", sa.String(length=200), nullable=False),
        sa.Column("by_institution", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name=op.f("fk_consultation_steps_request_id_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consultation_steps")),
    )
    with op.batch_alter_table("consultation_steps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consultation_steps_request_id"), ["request_id"], unique=False)
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("center_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("added_by", sa.String(length=64), nullable=True))
        batch_op.add_column(_time("removed_at"))
        batch_op.add_column(sa.Column("removed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("removal_reason", sa.Text(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_participants_center_id_centers"), "centers", ["center_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_participants_center_id_centers"), type_="foreignkey")
        for column in ("removal_reason", "removed_by", "removed_at", "added_by", "center_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("consultation_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consultation_steps_request_id"))
    op.drop_table("consultation_steps")
    with op.batch_alter_table("consultation_centers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consultation_centers_request_id"))
    op.drop_table("consultation_centers")
    op.drop_table("consultations")
