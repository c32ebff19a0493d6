"""Roles and the scope rules: who may see which institution's data and which centers' queues."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from telenet.domain.tiers import is_within


class Role(StrEnum):
    REQUESTER = "requester"
    READER = "reader"
    COORDINATOR = "coordinator"
    ADMIN = "admin"
    INTEGRATION = "integration"


SUBTREE_ROLES = frozenset({Role.COORDINATOR, Role.ADMIN})
CENTER_ROLES = frozenset({Role.READER, Role.COORDINATOR})


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of a use case, whichever protocol it came in by."""

    user_id: int
    username: str
    role: Role
    institution_id: int
    institution_code: str
    institution_path: str
    center_codes: frozenset[str] = field(default_factory=frozenset)
    title: str | None = None
    practice_since: date | None = None
    display_name: str | None = None
    remote_addr: str | None = None
    # The reason an administrator states to see a patient's record (break-glass); audited with every read.
    break_glass: str | None = None

    def sees_institution(self, path: str) -> bool:
        """Requesters and integration accounts see their own institution; coordinators and admins
        their institution's subtree; readers see institutions only through their centers' queues."""
        if self.role in SUBTREE_ROLES:
            return is_within(path, self.institution_path)
        if self.role in (Role.REQUESTER, Role.INTEGRATION):
            return path == self.institution_path
        return False

    def sees_center(self, center_code: str, center_institution_path: str) -> bool:
        """Readers and coordinators see the queues of their centers; admins those in their subtree."""
        if self.role in CENTER_ROLES and center_code in self.center_codes:
            return True
        return self.role is Role.ADMIN and is_within(center_institution_path, self.institution_path)

    def with_remote(self, remote_addr: str | None) -> Actor:
        from dataclasses import replace

        return replace(self, remote_addr=remote_addr)


def years_of_practice(since: date | None, on: date) -> int:
    """Whole years of independent practice on ``on`` (0 when unknown)."""
    if since is None or since > on:
        return 0
    years = on.year - since.year
    if (on.month, on.day) < (since.month, since.day):
        years -= 1
    return years


MIN_YEARS_TO_SIGN = 3
"""The invited physician who signs must have at least 3 years of independent practice (DESIGN, policy)."""


def may_sign_final(actor: Actor, on: date) -> bool:
    return years_of_practice(actor.practice_since, on) >= MIN_YEARS_TO_SIGN
