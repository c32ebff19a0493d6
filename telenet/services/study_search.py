"""Studies as DICOMweb sees them (QIDO-RS search, WADO-RS locate): matching in the database query, the scope
rules of C-FIND/C-GET for people, and one audit row per study read (who, which study, which patient, from
where), never a count.

Scope: a clinic (requester, integration account) sees the studies it sent and those of its own requests;
a reader the studies of requests at its centers, those it holds and those it takes part in; a coordinator
its centers' requests and everything sent from or requested within its subtree; an admin its subtree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from sqlalchemy import ColumnElement, bindparam, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Invalid, NotFound
from telenet.services.hub import Hub, ReadUnit, UnitOfWork, read_use_case
from telenet.store.models import (
    AuditEntry,
    Center,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    EcgMeasurement,
    Institution,
    Participant,
    Request,
)

LEVELS: Final = ("study", "series", "instance")
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100


@dataclass(frozen=True)
class SearchQuery:
    """The matching keys of a QIDO-RS search, already parsed (dates YYYYMMDD, names as DICOM patterns)."""

    level: str
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    study_description: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    modalities_in_study: tuple[str, ...] = ()
    modality: str | None = None
    sop_class_uids: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    offset: int = 0


@dataclass(frozen=True)
class StoredInstance:
    """One instance a WADO-RS request may read: its file and identifiers."""

    path: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size_bytes: int
    ecg_svg_path: str | None = None


# --------------------------------------------------------------------------------------------------
# Scope and matching, as SQL
# --------------------------------------------------------------------------------------------------


def _under(column: Any, path: str) -> ColumnElement[bool]:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")  # type: ignore[no-any-return]


def visible_studies(actor: Actor) -> ColumnElement[bool]:
    """The studies ``actor`` may see, as a condition on ``DicomStudy`` (the rules of the module docstring)."""
    if actor.role in (Role.REQUESTER, Role.INTEGRATION):
        own_requests = select(Request.id).where(Request.requesting_institution_id == actor.institution_id)
        clauses = [DicomStudy.source_institution_id == actor.institution_id, DicomStudy.request_id.in_(own_requests)]
        if actor.role is Role.INTEGRATION:  # a center's workstation account, as in C-FIND
            centers = select(Center.id).where(Center.institution_id == actor.institution_id)
            clauses.append(DicomStudy.request_id.in_(select(Request.id).where(Request.center_id.in_(centers))))
        return or_(*clauses)
    if actor.role is Role.ADMIN and not actor.break_glass:
        # Administrators get aggregates; images are patient data, seen only with a stated reason (audited).
        return false()
    at_my_centers = select(Center.id).where(Center.code.in_(sorted(actor.center_codes)))
    taking_part = select(Participant.request_id).where(
        Participant.user_id == actor.user_id, Participant.removed_at.is_(None)
    )
    request_clauses: list[ColumnElement[bool]] = [
        Request.center_id.in_(at_my_centers),
        Request.claimed_by_id == actor.user_id,
        Request.id.in_(taking_part),
    ]
    study_clauses: list[ColumnElement[bool]] = []
    if actor.role in (Role.COORDINATOR, Role.ADMIN):
        request_clauses.append(_under(Request.requesting_path, actor.institution_path))
        study_clauses.append(_under(DicomStudy.source_path, actor.institution_path))
    if actor.role is Role.ADMIN:
        centers_below = (
            select(Center.id)
            .join(Institution, Institution.id == Center.institution_id)
            .where(_under(Institution.path, actor.institution_path))
        )
        request_clauses.append(Request.center_id.in_(centers_below))
    if actor.role not in (Role.READER, Role.COORDINATOR, Role.ADMIN):
        return false()
    requests = select(Request.id).where(or_(*request_clauses))
    return or_(DicomStudy.request_id.in_(requests), *study_clauses)


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern (``*``, ``?``) as a LIKE pattern with ``\\`` as the escape character."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def is_wild(value: str) -> bool:
    return "*" in value or "?" in value


class _Plan:
    """A search's matching conditions as a shape (the statement's structure: which keys, matched how) and the
    values bound to it. Searches of one shape within one scope share one statement object, built once and
    reused with other values, so a query neither builds nor hashes its clauses again."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.shape: list[tuple[Any, ...]] = []
        self.values: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return name

    def _form(self, pattern: str) -> tuple[str, str]:
        """How one non-``*`` pattern matches, and its bound value: equality, or a wildcard (SQLite's LIKE
        is case-insensitive, so GLOB there)."""
        if not is_wild(pattern):
            return "eq", self.bind(pattern)
        if self.dialect == "sqlite":
            return "glob", self.bind("".join(f"[{c}]" if c in "[]" else c for c in pattern))
        return "like", self.bind(like_pattern(pattern))

    def match(self, key: str, pattern: str) -> None:
        """Single value matching, case-sensitive; ``*`` alone matches all."""
        if pattern != "*":
            kind, name = self._form(pattern)
            self.shape.append((kind, key, name))

    def any_of(self, key: str, patterns: Sequence[str]) -> None:
        """``key`` matches one of ``patterns`` (each as :meth:`match`); ``*`` among them matches all."""
        if "*" not in patterns:
            self.shape.append(("any", key, tuple(self._form(pattern) for pattern in patterns)))

    def person_name(self, key: str, pattern: str) -> None:
        """PN matching, case-insensitive (PS3.4 C.2.2.2.1 allows it), against the whole value or any one of its
        component groups: ``张*`` finds ``Zhang^San=张^三``, ``Zhang^San`` finds it too."""
        if pattern == "*":
            return
        if "=" in pattern:
            self.shape.append(("ilike", key, (self.bind(like_pattern(pattern)),)))
            return
        p = like_pattern(pattern)
        self.shape.append(("ilike", key, tuple(self.bind(form) for form in (p, p + "=%", "%=" + p, "%=" + p + "=%"))))

    def one_of(self, key: str, values: Sequence[str]) -> None:
        if values:
            self.shape.append(("in", key, self.bind(list(values))))

    def compare(self, op: str, key: str, value: Any) -> None:
        self.shape.append((op, key, self.bind(value)))


_COLUMNS: Final[dict[str, Any]] = {
    "study_uid": DicomStudy.study_instance_uid,
    "patient_name": DicomStudy.patient_name,
    "patient_id": DicomStudy.patient_id,
    "accession_number": DicomStudy.accession_number,
    "study_description": DicomStudy.study_description,
    "study_date": DicomStudy.study_date,
    "series_modality": DicomSeries.modality,
    "series_uid": DicomSeries.series_instance_uid,
    "sop_uid": DicomInstance.sop_instance_uid,
    "sop_class_uid": DicomInstance.sop_class_uid,
}


def _clause(entry: tuple[Any, ...]) -> ColumnElement[bool]:
    kind, key, names = entry
    column = _COLUMNS[key]
    if kind == "eq":
        return column == bindparam(names)  # type: ignore[no-any-return]
    if kind == "glob":
        return column.op("GLOB")(bindparam(names))  # type: ignore[no-any-return]
    if kind == "like":
        return column.like(bindparam(names), escape="\\")  # type: ignore[no-any-return]
    if kind == "ilike":
        return or_(*(column.ilike(bindparam(name), escape="\\") for name in names))
    if kind == "in":
        return column.in_(bindparam(names, expanding=True))  # type: ignore[no-any-return]
    if kind == "ge":
        return column >= bindparam(names)  # type: ignore[no-any-return]
    if kind == "le":
        return column <= bindparam(names)  # type: ignore[no-any-return]
    if kind == "any":
        return or_(*(_clause((form, key, name)) for form, name in names))
    if kind == "has_series":  # ModalitiesInStudy: a series of the study matches
        return exists().where(DicomSeries.study_id == DicomStudy.id, _clause(names)).correlate(DicomStudy)
    raise ValueError(kind)


def _plan(query: SearchQuery, dialect: str) -> _Plan:
    plan = _Plan(dialect)
    plan.one_of("study_uid", query.study_uids)
    if query.patient_name:
        plan.person_name("patient_name", query.patient_name)
    if query.patient_id:
        plan.match("patient_id", query.patient_id)
    if query.accession_number:
        plan.match("accession_number", query.accession_number)
    if query.study_description:
        plan.match("study_description", query.study_description)
    if query.date_from:
        plan.compare("ge", "study_date", query.date_from)
    if query.date_to:
        plan.compare("le", "study_date", query.date_to)
    if query.modalities_in_study:
        inner = _Plan(dialect)
        inner.values = plan.values  # one namespace of bound values
        inner.any_of("series_modality", query.modalities_in_study)
        plan.shape.extend(("has_series", "series_modality", entry) for entry in inner.shape)
    if query.level in ("series", "instance"):
        plan.one_of("series_uid", query.series_uids)
        if query.modality:
            plan.match("series_modality", query.modality)
    if query.level == "instance":
        plan.one_of("sop_uid", query.sop_uids)
        plan.one_of("sop_class_uid", query.sop_class_uids)
    return plan


# --------------------------------------------------------------------------------------------------
# Audit: one row per study read
# --------------------------------------------------------------------------------------------------


def audit_studies(
    uow: UnitOfWork, actor: Actor, action: str, studies: Sequence[Any], *, outcome: str = "ok", **detail: Any
) -> None:
    """One audit row per study (who, which study, which patient, from where), written with the use case (a
    read use case's audit batch) and filed under the institution that acquired it, whose admins see who read
    (or tried to read) it. ``studies`` have ``study_instance_uid``, ``source_path``, ``patient_id`` and
    ``accession_number``."""
    now = uow.hub.clock.now()
    rows = [
        {
            "at": now,
            "actor_id": actor.user_id or None,
            "actor": actor.username,
            "actor_institution_path": actor.institution_path,
            "action": action,
            "object_type": "dicom_study",
            "object_id": study.study_instance_uid,
            "object_path": study.source_path,
            "remote_addr": actor.remote_addr,
            "outcome": outcome,
            "detail": {"patient_id": study.patient_id, "accession_number": study.accession_number, **detail},
        }
        for study in studies
    ]
    if isinstance(uow, ReadUnit):
        uow.more_audit.extend(rows)
    else:
        uow.session.add_all(AuditEntry(**row) for row in rows)


# --------------------------------------------------------------------------------------------------
# QIDO-RS
# --------------------------------------------------------------------------------------------------

# Columns, not ORM objects: a search hydrates nothing (the rows go straight to DICOM JSON).
_STUDY_COLUMNS: Final = (
    DicomStudy.id.label("study_pk"),
    DicomStudy.study_instance_uid,
    DicomStudy.source_path,
    DicomStudy.patient_name,
    DicomStudy.patient_id,
    DicomStudy.patient_birth_date,
    DicomStudy.patient_sex,
    DicomStudy.study_date,
    DicomStudy.study_time,
    DicomStudy.accession_number,
    DicomStudy.study_id,
    DicomStudy.study_description,
    DicomStudy.referring_physician,
    DicomStudy.modalities,
    DicomStudy.instance_count,
    DicomStudy.character_set,
)
_SERIES_COLUMNS: Final = (
    DicomSeries.series_instance_uid,
    DicomSeries.modality,
    DicomSeries.series_number,
    DicomSeries.series_description,
    DicomSeries.body_part,
    DicomSeries.instance_count.label("series_instance_count"),
)
_INSTANCE_COLUMNS: Final = (
    DicomInstance.sop_instance_uid,
    DicomInstance.sop_class_uid,
    DicomInstance.instance_number,
    DicomInstance.transfer_syntax_uid,
)
_STUDY_KEYS: Final = (
    "study_instance_uid",
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician",
    "instance_count",
    "character_set",
)
_SERIES_KEYS: Final = tuple(c.key for c in _SERIES_COLUMNS)
_INSTANCE_KEYS: Final = tuple(c.key for c in _INSTANCE_COLUMNS)


def _row(row: Any, level: str) -> dict[str, Any]:
    values = row._mapping
    out = {key: values[key] for key in _STUDY_KEYS}
    out["modalities"] = list(values["modalities"] or [])
    out["series_count"] = values["series_count"] if level == "study" else None
    if level in ("series", "instance"):
        out.update((key, values[key]) for key in _SERIES_KEYS)
    if level == "instance":
        out.update((key, values[key]) for key in _INSTANCE_KEYS)
    return out


def _check(query: SearchQuery) -> None:
    if query.level not in LEVELS:
        raise Invalid(f"level must be one of {', '.join(LEVELS)}", code="bad-level")
    if not 0 <= query.limit <= MAX_LIMIT or query.offset < 0:
        raise Invalid(f"limit must be 0..{MAX_LIMIT} and offset ≥ 0", code="bad-parameter")


async def search(hub: Hub, actor: Actor, query: SearchQuery) -> list[dict[str, Any]]:
    """QIDO-RS at study, series or instance level within the caller's scope: each match as a dict of study
    (and series, instance) values, in arrival order, paged in the query. One SELECT on a read session (no
    write lock); the audit rows (the search's and one per study) are durable before this returns."""
    _check(query)
    async with read_use_case(hub, actor, f"dicomweb.search.{query.level}", "dicom_study", single_statement=True) as uow:
        rows = await _search(uow.session, hub.dialect, actor, query)
        seen: dict[str, Any] = {}
        for row in rows:
            seen.setdefault(row.study_instance_uid, row)
        uow.audit(object_path=actor.institution_path, detail={"level": query.level, "matches": len(rows)})
        audit_studies(uow, actor, "dicomweb.search", list(seen.values()), level=query.level)
        return [_row(row, query.level) for row in rows]


_SEARCH_SQL: dict[tuple[Any, ...], Any] = {}
_SEARCH_CACHE_SIZE: Final = 4096


def _search_sql(actor: Actor, level: str, shape: tuple[tuple[Any, ...], ...]) -> Any:
    key = (_scope_key(actor), level, shape)
    sql = _SEARCH_SQL.get(key)
    if sql is not None:
        return sql
    conditions = [visible_studies(actor), DicomStudy.instance_count > 0, *(_clause(entry) for entry in shape)]
    if level == "study":
        series_count = (
            select(func.count())
            .select_from(DicomSeries)
            .where(DicomSeries.study_id == DicomStudy.id)
            .correlate(DicomStudy)
            .scalar_subquery()
            .label("series_count")
        )
        sql = select(*_STUDY_COLUMNS, series_count).where(*conditions).order_by(DicomStudy.id)
    elif level == "series":
        sql = (
            select(*_STUDY_COLUMNS, *_SERIES_COLUMNS)
            .join(DicomSeries, DicomSeries.study_id == DicomStudy.id)
            .where(*conditions)
            .order_by(DicomSeries.id)
        )
    else:
        sql = (
            select(*_STUDY_COLUMNS, *_SERIES_COLUMNS, *_INSTANCE_COLUMNS)
            .join(DicomSeries, DicomSeries.study_id == DicomStudy.id)
            .join(DicomInstance, DicomInstance.series_id == DicomSeries.id)
            .where(*conditions)
            .order_by(DicomInstance.id)
        )
    sql = sql.limit(bindparam("limit")).offset(bindparam("offset"))
    if len(_SEARCH_SQL) >= _SEARCH_CACHE_SIZE:
        _SEARCH_SQL.clear()
    _SEARCH_SQL[key] = sql
    return sql


async def _search(session: AsyncSession, dialect: str, actor: Actor, query: SearchQuery) -> list[Any]:
    plan = _plan(query, dialect)
    sql = _search_sql(actor, query.level, tuple(plan.shape))
    return list((await session.execute(sql, {**plan.values, "limit": query.limit, "offset": query.offset})).all())


# --------------------------------------------------------------------------------------------------
# WADO-RS: the files of a study, series or instance
# --------------------------------------------------------------------------------------------------


def _scope_key(actor: Actor) -> tuple[Any, ...]:
    """What :func:`visible_studies` depends on: actors with equal keys see the same studies."""
    return (
        actor.role,
        actor.institution_id,
        actor.institution_path,
        actor.user_id,
        actor.center_codes,
        bool(actor.break_glass),
    )


# Built once per scope and shape, with bound parameters for the UIDs: a statement object that is reused
# keeps SQLAlchemy's cache key memoized, so a retrieve neither builds nor hashes the scope's clauses again.
_LOCATE_SQL: dict[tuple[Any, ...], Any] = {}
_LOCATE_CACHE_SIZE: Final = 1024


def _locate_sql(actor: Actor, by_series: bool, by_instance: bool) -> Any:
    key = (_scope_key(actor), by_series, by_instance)
    sql = _LOCATE_SQL.get(key)
    if sql is None:
        sql = (
            select(
                DicomInstance.path,
                DicomInstance.sop_instance_uid,
                DicomInstance.sop_class_uid,
                DicomInstance.transfer_syntax_uid,
                DicomInstance.size_bytes,
                DicomSeries.series_instance_uid,
                EcgMeasurement.svg_path,
                DicomStudy.source_path,
                DicomStudy.patient_id,
            )
            .join(DicomSeries, DicomSeries.id == DicomInstance.series_id)
            .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
            .outerjoin(EcgMeasurement, EcgMeasurement.instance_id == DicomInstance.id)
            .where(DicomStudy.study_instance_uid == bindparam("study_uid"), visible_studies(actor))
            .order_by(DicomSeries.series_number, DicomSeries.id, DicomInstance.instance_number, DicomInstance.id)
        )
        if by_series:
            sql = sql.where(DicomSeries.series_instance_uid == bindparam("series_uid"))
        if by_instance:
            sql = sql.where(DicomInstance.sop_instance_uid == bindparam("sop_uid"))
        if len(_LOCATE_SQL) >= _LOCATE_CACHE_SIZE:
            _LOCATE_SQL.clear()
        _LOCATE_SQL[key] = sql
    return sql


async def locate(
    hub: Hub,
    actor: Actor,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    action: str = "retrieve",
) -> list[StoredInstance]:
    """The stored instances of a study (or one series, one instance) the caller may read, in series and
    instance order; 404 when the study is unknown or outside the caller's scope (its existence is not told).
    One SELECT when there is something to read (files, the study's owner and patient for the audit)."""
    async with read_use_case(hub, actor, f"dicomweb.{action}", "dicom_study", study_uid, single_statement=True) as uow:
        session = uow.session
        parameters = {"study_uid": study_uid}
        if series_uid is not None:
            parameters["series_uid"] = series_uid
        if sop_uid is not None:
            parameters["sop_uid"] = sop_uid
        sql = _locate_sql(actor, series_uid is not None, sop_uid is not None)
        rows = (await session.execute(sql, parameters)).all()
        if not rows:
            await _not_located(uow, actor, study_uid, series_uid, sop_uid)
        first = rows[0]
        uow.audit(
            object_path=first.source_path,
            detail={
                "patient_id": first.patient_id,
                "series": series_uid,
                "instance": sop_uid,
                "instances": len(rows),
            },
        )
        return [
            StoredInstance(
                path=path,
                study_instance_uid=study_uid,
                series_instance_uid=series,
                sop_instance_uid=sop,
                sop_class_uid=sop_class,
                transfer_syntax_uid=syntax,
                size_bytes=size,
                ecg_svg_path=svg,
            )
            for path, sop, sop_class, syntax, size, series, svg, _owner, _patient in rows
        ]


async def _not_located(
    uow: UnitOfWork, actor: Actor, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> NoReturn:
    """Why nothing was found: the study is unknown or outside the caller's scope (the refusal filed where the
    owner's admins see it), or it has no such series or instance."""
    session = uow.session
    study = (
        await session.execute(
            select(DicomStudy.source_path, DicomStudy.patient_id).where(
                DicomStudy.study_instance_uid == study_uid, visible_studies(actor)
            )
        )
    ).one_or_none()
    if study is None:
        owner = (
            await session.execute(select(DicomStudy.source_path).where(DicomStudy.study_instance_uid == study_uid))
        ).scalar_one_or_none()
        if owner is not None:
            uow.audit(object_path=owner)
        raise NotFound(f"no study {study_uid}", code="no-study")
    uow.audit(object_path=study.source_path, detail={"patient_id": study.patient_id})
    what = f"instance {sop_uid}" if sop_uid else f"series {series_uid}" if series_uid else "instance"
    raise NotFound(f"no {what} in study {study_uid}", code="no-instance")
