"""DICOM attribute matching (PS3.4 C.2.2.2) as SQL: single value, wildcard (``*``, ``?``), range and UID
list matching all happen in the database query, so a query finds every match in scope, however many
studies the scope holds, and only the answer is capped.

Matching is case-sensitive on both engines, as DICOM matching is for these VRs: SQLite's ``LIKE`` is not, so
SQLite uses ``GLOB`` (whose wildcards are DICOM's) and PostgreSQL ``LIKE`` with ``%`` and ``_``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, true


def is_wild(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _like_pattern(pattern: str) -> str:
    out = []
    for char in pattern:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def _glob_pattern(pattern: str) -> str:
    # GLOB's wildcards are DICOM's; only '[' starts a class, so it is written as the class '[[]'.
    return pattern.replace("[", "[[]")


def value_clause(column: Any, pattern: str | None, dialect: str) -> ColumnElement[bool] | None:
    """The WHERE clause of one matching key; None when the key matches everything (empty or ``*``)."""
    if not pattern or pattern == "*":
        return None
    if not is_wild(pattern):
        clause: ColumnElement[bool] = column == pattern
        return clause
    if dialect == "sqlite":
        clause = column.op("GLOB")(_glob_pattern(pattern))
        return clause
    clause = column.like(_like_pattern(pattern), escape="\\")
    return clause


def range_clause(column: Any, low: str | None, high: str | None) -> ColumnElement[bool] | None:
    """A DA range over a ``YYYYMMDD`` text column (text order is date order)."""
    if low is None and high is None:
        return None
    parts: list[ColumnElement[bool]] = [column.is_not(None), column != ""]
    if low is not None:
        parts.append(column >= low)
    if high is not None:
        parts.append(column <= high)
    return and_(*parts)


def datetime_range_clause(column: Any, low: str | None, high: str | None) -> ColumnElement[bool] | None:
    """A DA range over a UTC timestamp column: from the start of ``low`` to the end of ``high`` (UTC days)."""
    if low is None and high is None:
        return None
    parts: list[ColumnElement[bool]] = [column.is_not(None)]
    if low is not None:
        parts.append(column >= _day(low))
    if high is not None:
        parts.append(column < _day(high) + timedelta(days=1))
    return and_(*parts)


def _day(text: str) -> datetime:
    day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def all_of(*clauses: ColumnElement[bool] | None) -> ColumnElement[bool]:
    present = [c for c in clauses if c is not None]
    return and_(*present) if present else true()
