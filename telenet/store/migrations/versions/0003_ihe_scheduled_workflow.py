"""IHE scheduled workflow: placer/filler numbers, patient identifiers and merges, order status in the outbox,
per-facility HL7 options

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import telenet.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = telenet.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("placer_order_number", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("filler_order_number", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("discontinued_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("study_instance_uid", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_requests_study_instance_uid"), ["study_instance_uid"], unique=False)
    with op.batch_alter_table("institution_ae_titles") as batch:
        batch.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("port", sa.Integer(), nullable=True))
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("identifiers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("merged_into_id", _BIG, nullable=True))
        batch.create_foreign_key(op.f("fk_patients_merged_into_id_patients"), "patients", ["merged_into_id"], ["id"])
    with op.batch_alter_table("institutions") as batch:
        batch.add_column(sa.Column("hl7_order_status", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("hl7_ack_mode", sa.String(length=8), server_default="ack", nullable=False))
    with op.batch_alter_table("hl7_outbox") as batch:
        batch.add_column(sa.Column("message_kind", sa.String(length=8), server_default="result", nullable=False))
        batch.alter_column("report_id", existing_type=_BIG, nullable=True)
        batch.drop_constraint(op.f("ck_hl7_outbox_result_status"), type_="check")
        batch.create_check_constraint(op.f("ck_hl7_outbox_result_status"), "result_status in ('F','C','S')")
    op.create_table(
        "patient_merges",
        sa.Column("id", _BIG, autoincrement=True, nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("institution_path", sa.String(length=400), nullable=False),
        sa.Column("surviving_patient_id", _BIG, nullable=False),
        sa.Column("merged_patient_id", _BIG, nullable=False),
        sa.Column("merged_his_id", sa.String(length=64), nullable=False),
        sa.Column("surviving_his_id", sa.String(length=64), nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("message_control_id", sa.String(length=199), nullable=True),
        sa.Column("merged_at", _TS, nullable=False),
        sa.Column("merged_by", sa.String(length=64), nullable=False),
        sa.Column("reverted_at", _TS, nullable=True),
        sa.Column("reverted_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"], name=op.f("fk_patient_merges_institution_id_institutions")
        ),
        sa.ForeignKeyConstraint(
            ["merged_patient_id"], ["patients.id"], name=op.f("fk_patient_merges_merged_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["surviving_patient_id"], ["patients.id"], name=op.f("fk_patient_merges_surviving_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_merges")),
    )
    with op.batch_alter_table("patient_merges") as batch:
        batch.create_index(batch.f("ix_patient_merges_institution_id"), ["institution_id"], unique=False)


def downgrade() -> None:
    op.drop_table("patient_merges")
    with op.batch_alter_table("hl7_outbox") as batch:
        batch.drop_constraint(op.f("ck_hl7_outbox_result_status"), type_="check")
        batch.create_check_constraint(op.f("ck_hl7_outbox_result_status"), "result_status in ('F','C')")
        batch.alter_column("report_id", existing_type=_BIG, nullable=False)
        batch.drop_column("message_kind")
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("hl7_ack_mode")
        batch.drop_column("hl7_order_status")
    with op.batch_alter_table("patients") as batch:
        batch.drop_constraint(op.f("fk_patients_merged_into_id_patients"), type_="foreignkey")
        batch.drop_column("merged_into_id")
        batch.drop_column("identifiers")
    with op.batch_alter_table("institution_ae_titles") as batch:
        batch.drop_column("port")
        batch.drop_column("host")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index(batch.f("ix_requests_study_instance_uid"))
        batch.drop_column("study_instance_uid")
        batch.drop_column("discontinued_reason")
        batch.drop_column("filler_order_number")
        batch.drop_column("placer_order_number")
