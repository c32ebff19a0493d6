"""DICOMweb: indexes for the QIDO-RS matching keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_studies_patient_id", ["patient_id"], unique=False)
        batch_op.create_index("ix_dicom_studies_study_date", ["study_date"], unique=False)
        batch_op.create_index("ix_dicom_studies_patient_name", ["patient_name"], unique=False)
    with op.batch_alter_table("dicom_series", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_series_study_modality", ["study_id", "modality"], unique=False)
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_instances_sop_class_uid", ["sop_class_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.drop_index("ix_dicom_instances_sop_class_uid")
    with op.batch_alter_table("dicom_series", schema=None) as batch_op:
        batch_op.drop_index("ix_dicom_series_study_modality")
    with op.batch_alter_table("dicom_studies", schema=None) as batch_op:
        batch_op.drop_index("ix_dicom_studies_patient_name")
        batch_op.drop_index("ix_dicom_studies_study_date")
        batch_op.drop_index("ix_dicom_studies_patient_id")
