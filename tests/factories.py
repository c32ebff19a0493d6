"""Builders of valid test data: national id numbers with correct check digits, order bodies."""

from __future__ import annotations

from typing import Any

from telenet.domain.patients import national_id_check_char


def national_id(serial: int, region: str = "450102", birth: str = "19800101") -> str:
    """A syntactically valid 18-character id (GB 11643) for fictional people."""
    first17 = f"{region}{birth}{serial % 1000:03d}"
    return first17 + national_id_check_char(first17)


def order(
    kind: str = "imaging",
    *,
    modality: str | None = "DX",
    priority: str = "routine",
    patient_id: str = "P0001",
    name: str = "张三",
    serial: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": kind,
        "priority": priority,
        "clinical_question": "咳嗽两周，发热，排除肺炎",
        "patient": {
            "id": patient_id,
            "name": name,
            "sex": "M",
            "birth_date": "1980-01-01",
            "national_id": national_id(serial),
        },
        "consent": {"given_by": "患者本人", "given_at": "2026-03-02T09:50:00+08:00"},
    }
    if modality is not None:
        body["modality"] = modality
    if kind == "imaging":
        body["body_part"] = "CHEST"
    body.update(extra)
    return body
