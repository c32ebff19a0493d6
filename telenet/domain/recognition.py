"""Result recognition (检查检验结果互认) under 《医疗机构检查检验结果互认管理办法》(国卫医发〔2022〕6号).

What is recognized is the exam data and images (检查检验结果: 图像或数据信息), never the physician's
conclusion: 第二条 says 检查检验结果不包括医师出具的诊断结论. A recognized remote read therefore saves
the repeat acquisition, not the reading of the images at the accepting institution.

Who recognizes whom: institutions of the same level recognize each other, and a lower level accepts
results from a higher one (same tier or producer above accepter); a result going up the tiers is not
recognizable by default. Recognition is between *different* institutions: a result at the institution
that produced it is simply its own record. A result is recognizable only while its producing center
passes quality control (质控合格) and within the validity window of its (service, modality).

The reasons an institution may still repeat the exam follow the national list (重新检查的情形) and,
where it is silent, the published provincial implementation rules; see ``NotRecognizedReason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from telenet.domain.errors import Invalid
from telenet.domain.tiers import Tier

RECOGNITION_SCOPE = "exam data and images, not the physician's conclusion"


class NotRecognizedReason(StrEnum):
    """Why an institution did not recognize an earlier result and repeated the exam.

    Sources: the 2022 national 办法 lists, as cases where the exam may be repeated: a changed
    condition (因病情变化…难以满足临床诊疗需求), results that change fast in the course of the disease
    (变化较快), exams of major importance such as before surgery or transfusion (手术、输血等重大医疗措施前),
    emergencies (急诊、急救等紧急状态), forensic / disability / sick-retirement assessments
    (司法、伤残及病退等鉴定), and other cases that really need a repeat (其他情形确需复查, recorded here as
    the physician's judgement). The patient's or relatives' request (患者或其亲属要求), a producing
    laboratory that failed external quality assessment (未通过室间质评) and a result too old to be of
    reference value (时间差距较大, 已无参考价值) come from provincial implementation rules (e.g. the
    内蒙古自治区 2022 互认工作方案) and match the 办法's own preconditions of 质控合格 and a validity period.
    """

    CONDITION_CHANGED = "condition_changed"
    FAST_CHANGING_VALUE = "fast_changing_value"
    BEFORE_MAJOR_PROCEDURE = "before_major_procedure"
    EMERGENCY = "emergency"
    FORENSIC = "forensic"
    PATIENT_REQUEST = "patient_request"
    QUALITY_CONTROL_FAILED = "quality_control_failed"
    EXPIRED = "expired"
    PHYSICIAN_JUDGEMENT = "physician_judgement"

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS: Mapping[NotRecognizedReason, str] = {
    NotRecognizedReason.CONDITION_CHANGED: "病情变化",
    NotRecognizedReason.FAST_CHANGING_VALUE: "检查检验结果变化较快",
    NotRecognizedReason.BEFORE_MAJOR_PROCEDURE: "手术、输血等重大医疗措施前",
    NotRecognizedReason.EMERGENCY: "急诊、急救等紧急状态",
    NotRecognizedReason.FORENSIC: "司法、伤残及病退等鉴定",
    NotRecognizedReason.PATIENT_REQUEST: "患者或其亲属要求复查",
    NotRecognizedReason.QUALITY_CONTROL_FAILED: "质控不合格",
    NotRecognizedReason.EXPIRED: "超出有效期",
    NotRecognizedReason.PHYSICIAN_JUDGEMENT: "医师判断确需复查",
}

ValidityKey = tuple[str, str | None]
"""``(service, modality)``; a ``None`` modality is the fallback for every modality of the service."""

# Configurable per network; these are only the defaults used when a network sets nothing.
DEFAULT_VALIDITY_DAYS: Mapping[ValidityKey, int] = {
    # Laboratory items, from the published hospital list cited in DESIGN.md ("Policy facts"): most
    # chemistry 30 days, HbA1c 60, electrolytes 7. The hub brokers no lab service yet; the figures are
    # here so a network that records lab recognitions starts from a sourced default.
    ("lab", None): 30,
    ("lab", "chemistry"): 30,
    ("lab", "hba1c"): 60,
    ("lab", "electrolytes"): 7,
    # Imaging and ECG: OUR ASSUMPTION, not a published figure. Neither the 2022 办法 nor the seeds give
    # windows; they leave them to the item lists of the provincial quality-control centers. Chosen to
    # be conservative for the clinics we serve (the accepting physician may still repeat the exam):
    ("imaging", "DR"): 30,  # plain radiography: 30 days, aligned with the chemistry default
    ("imaging", "CR"): 30,
    ("imaging", "DX"): 30,
    ("imaging", "US"): 30,  # ultrasound findings evolve (pregnancy, effusions): same as plain X-ray
    ("imaging", "CT"): 90,  # cross-sectional studies of a stable condition stay useful for longer
    ("imaging", "MR"): 90,
    ("imaging", None): 30,  # any other imaging modality: the shortest imaging window
    ("ecg", "ECG"): 7,  # electrophysiology changes fast; treated like electrolytes
    ("ecg", None): 7,
}


def validity_days_for(validity_days: Mapping[ValidityKey, int], service: str, modality: str | None) -> int | None:
    """The window of ``(service, modality)``, falling back to ``(service, None)``; None when unset."""
    days = validity_days.get((service, modality))
    if days is None:
        days = validity_days.get((service, None))
    return days


@dataclass(frozen=True)
class ResultFacts:
    """What recognition needs to know about a final result produced inside the network."""

    request_id: int
    service: str
    modality: str | None
    final_at: datetime
    producing_institution_code: str
    producing_tier: Tier
    producing_center_code: str
    center_qc_failed: bool
    # Who made the data (the inviting, acquiring institution answers for its quality); None: the producer.
    acquiring_institution_code: str | None = None
    acquiring_tier: Tier | None = None
    acquiring_qc_failed: bool = False
    # The acquiring site is declared under the reading center's quality control (同质化) by a network.
    homogeneous: bool = False


@dataclass(frozen=True)
class Eligibility:
    """Whether a result may be recognized at an institution now, why, and until when it could be."""

    recognizable: bool
    reason: str
    expires_at: datetime


# Stable values of ``Eligibility.reason``; checked in this order, the first that applies wins.
RECOGNIZABLE = "recognizable"
SAME_INSTITUTION = "same institution"
QC_FAILED = "quality control failed"
ACQUIRER_QC_FAILED = "acquiring institution failed quality control"
NO_VALIDITY_WINDOW = "no validity window"
LOWER_LEVEL = "lower level"
EXPIRED = "expired"


def eligibility(
    result: ResultFacts,
    *,
    at_institution_code: str,
    at_tier: Tier,
    now: datetime,
    validity_days: Mapping[ValidityKey, int] = DEFAULT_VALIDITY_DAYS,
) -> Eligibility:
    """Decide whether ``result`` may be recognized at another institution at ``now``.

    ``expires_at = final_at + window``; the window is inclusive (recognizable while ``now <=
    expires_at``). The checks, first failing wins: same institution (the acquiring or the reading one:
    recognition is between different institutions), the acquiring institution or the reading center failed
    quality control, no window configured for the (service, modality) (``expires_at`` is then
    ``final_at``), the data (at the acquiring site's level, or the reading center's for a 同质化 site) or the
    reading center sit at a lower tier than the accepting institution, the window has passed.
    """
    if (result.final_at.tzinfo is None) != (now.tzinfo is None):
        raise Invalid("final_at and now must both be timezone-aware or both naive")
    days = validity_days_for(validity_days, result.service, result.modality)
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 0):
        raise Invalid(f"validity window of {(result.service, result.modality)!r} must be whole days >= 0")
    expires_at = result.final_at + timedelta(days=days or 0)
    acquirer = result.acquiring_institution_code or result.producing_institution_code
    # The data count at the acquiring site's level, or at the reading center's when the site is under its
    # quality control (同质化); the reading center's own level bounds it either way.
    data_tier = result.producing_tier if result.homogeneous else (result.acquiring_tier or result.producing_tier)
    if at_institution_code in (acquirer, result.producing_institution_code):
        reason = SAME_INSTITUTION
    elif result.acquiring_qc_failed:
        reason = ACQUIRER_QC_FAILED
    elif result.center_qc_failed:
        reason = QC_FAILED
    elif days is None:
        reason = NO_VALIDITY_WINDOW
    elif at_tier.is_above(data_tier) or at_tier.is_above(result.producing_tier):
        reason = LOWER_LEVEL
    elif now > expires_at:
        reason = EXPIRED
    else:
        return Eligibility(recognizable=True, reason=RECOGNIZABLE, expires_at=expires_at)
    return Eligibility(recognizable=False, reason=reason, expires_at=expires_at)


DECISIONS = ("recognized", "not_recognized")
MAX_NOTE_LENGTH = 2000


def validate_decision(decision: str, reason_code: str | None, note: str | None) -> NotRecognizedReason | None:
    """Check a recognition decision and return its parsed reason (None for "recognized").

    "recognized" carries no reason code; "not_recognized" needs one of ``NotRecognizedReason``.
    ``physician_judgement`` (其他情形确需复查) also needs a note saying why, because the 办法 asks that the
    patient be told the reason for a repeat and the code alone does not say it.
    """
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        raise Invalid(f"note is longer than {MAX_NOTE_LENGTH} characters", details={"field": "note"})
    if decision == "recognized":
        if reason_code is not None:
            raise Invalid("a recognized result takes no reason code", details={"field": "reason_code"})
        return None
    if decision == "not_recognized":
        if reason_code is None:
            raise Invalid("a result that is not recognized needs a reason code", details={"field": "reason_code"})
        try:
            reason = NotRecognizedReason(reason_code)
        except ValueError:
            allowed = ", ".join(r.value for r in NotRecognizedReason)
            raise Invalid(
                f"unknown reason code {reason_code!r}; expected one of {allowed}",
                details={"field": "reason_code"},
            ) from None
        if reason is NotRecognizedReason.PHYSICIAN_JUDGEMENT and not (note and note.strip()):
            raise Invalid("physician_judgement needs a note saying why", details={"field": "note"})
        return reason
    raise Invalid(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}", details={"field": "decision"})
