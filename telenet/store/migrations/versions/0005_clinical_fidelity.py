"""clinical fidelity: critical findings when found (phone steps, P results), report versions with both
doctors, the practitioner registry, the ordering clinician

Revision ID: 0005
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0005"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = telenet.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qc_failed", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("dicom_charset", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("hl7_charset", sa.String(length=16), nullable=True))
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("homogeneous_sites", sa.JSON(), nullable=True))
    with op.batch_alter_table("recognition_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acquiring_institution_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_recognition_decisions_acquiring_institution_id_institutions"),
            "institutions",
            ["acquiring_institution_id"],
            ["id"],
        )
    op.create_table(
        "practitioner_records",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=True),
        sa.Column("practice_since", sa.Date(), nullable=True),
        sa.Column("licence_number", sa.String(length=32), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_practitioner_records_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_practitioner_records")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ordering_clinician_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("ordering_clinician_name", sa.String(length=200), nullable=True))
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("superseded_at", _TS, nullable=True))
        batch_op.add_column(sa.Column("preliminary_author_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("preliminary_author_name", sa.String(length=200), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_reports_preliminary_author_id_users"), "users", ["preliminary_author_id"], ["id"]
        )
    with op.batch_alter_table("critical_findings", schema=None) as batch_op:
        batch_op.alter_column("report_id", existing_type=_ID, nullable=True)
        batch_op.add_column(sa.Column("raised_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("center_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_critical_findings_raised_by_id_users"), "users", ["raised_by_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_critical_findings_center_id_centers"), "centers", ["center_id"], ["id"]
        )
    op.create_table(
        "critical_calls",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("critical_id", _ID, nullable=False),
        sa.Column("called_at", _TS, nullable=False),
        sa.Column("caller_id", sa.Integer(), nullable=False),
        sa.Column("caller_name", sa.String(length=200), nullable=False),
        sa.Column("callee_name", sa.String(length=200), nullable=False),
        sa.Column("callee_role", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("read_back", sa.Text(), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["caller_id"], ["users.id"], name=op.f("fk_critical_calls_caller_id_users")),
        sa.ForeignKeyConstraint(
            ["critical_id"], ["critical_findings.id"], name=op.f("fk_critical_calls_critical_id_critical_findings")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_critical_calls")),
    )
    with op.batch_alter_table("critical_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_critical_calls_critical_id"), ["critical_id"], unique=False)
    with op.batch_alter_table("hl7_outbox", schema=None) as batch_op:
        batch_op.alter_column("report_id", existing_type=_ID, nullable=True)
        batch_op.add_column(sa.Column("critical_id", _ID, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_hl7_outbox_critical_id_critical_findings"), "critical_findings", ["critical_id"], ["id"]
        )
        batch_op.drop_constraint(batch_op.f("ck_hl7_outbox_result_status"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_hl7_outbox_result_status"), "result_status in ('F','C','S','P')"
        )


def downgrade() -> None:
    with op.batch_alter_table("hl7_outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_hl7_outbox_result_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_hl7_outbox_result_status"), "result_status in ('F','C','S')")
        batch_op.drop_constraint(batch_op.f("fk_hl7_outbox_critical_id_critical_findings"), type_="foreignkey")
        batch_op.drop_column("critical_id")
    with op.batch_alter_table("critical_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_critical_calls_critical_id"))
    op.drop_table("critical_calls")
    with op.batch_alter_table("critical_findings", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_critical_findings_center_id_centers"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_critical_findings_raised_by_id_users"), type_="foreignkey")
        batch_op.drop_column("source")
        batch_op.drop_column("center_id")
        batch_op.drop_column("raised_by_id")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_reports_preliminary_author_id_users"), type_="foreignkey")
        batch_op.drop_column("preliminary_author_name")
        batch_op.drop_column("preliminary_author_id")
        batch_op.drop_column("superseded_at")
        batch_op.drop_column("version")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("ordering_clinician_name")
        batch_op.drop_column("ordering_clinician_id")
    op.drop_table("practitioner_records")
    with op.batch_alter_table("recognition_decisions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_recognition_decisions_acquiring_institution_id_institutions"), type_="foreignkey"
        )
        batch_op.drop_column("acquiring_institution_id")
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.drop_column("homogeneous_sites")
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.drop_column("hl7_charset")
        batch_op.drop_column("dicom_charset")
        batch_op.drop_column("qc_failed")
