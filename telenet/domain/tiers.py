"""The five tiers of the network (省—地市—县—乡—村) and the materialized ancestor path."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """Administrative tier; a lower ``rank`` is a higher tier."""

    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def chinese(self) -> str:
        return _CHINESE[self]

    def is_above(self, other: Tier) -> bool:
        """True when this tier is strictly higher (closer to the province) than ``other``."""
        return self.rank < other.rank


_RANK = {t: i for i, t in enumerate(Tier)}
_CHINESE = {
    Tier.PROVINCE: "省",
    Tier.CITY: "地市",
    Tier.COUNTY: "县",
    Tier.TOWNSHIP: "乡",
    Tier.VILLAGE: "村",
}

PATH_SEPARATOR = "/"


def child_path(parent_path: str | None, code: str) -> str:
    """The materialized path of an institution: ``/PROV/CITY/COUNTY/`` with a trailing separator.

    The trailing separator makes a prefix match exact: ``/A/B/`` never matches ``/A/BC/``.
    """
    base = parent_path if parent_path else PATH_SEPARATOR
    return f"{base}{code}{PATH_SEPARATOR}"


def path_codes(path: str) -> list[str]:
    """The codes along a path, from the root down to the institution itself."""
    return [part for part in path.split(PATH_SEPARATOR) if part]


def is_within(path: str, ancestor_path: str) -> bool:
    """True when ``path`` is ``ancestor_path`` itself or lies under it."""
    return path.startswith(ancestor_path)
