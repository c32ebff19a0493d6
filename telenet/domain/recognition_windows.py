"""Validity windows of result recognition per network: the file's ``"service:modality"`` overrides merged
over the documented defaults of ``telenet.domain.recognition``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from telenet.domain.errors import Invalid
from telenet.domain.recognition import DEFAULT_VALIDITY_DAYS, ValidityKey


def parse_override_key(key: str) -> ValidityKey:
    """``"imaging:DX"`` → ``("imaging", "DX")``; ``"imaging:*"`` (or ``"imaging"``) is the service fallback."""
    service, _, modality = key.partition(":")
    if not service:
        raise Invalid(f"a validity override key looks like service:modality, got {key!r}")
    return (service, modality if modality and modality != "*" else None)


def validity_windows(
    overrides: Iterable[Mapping[str, int]], defaults: Mapping[ValidityKey, int] = DEFAULT_VALIDITY_DAYS
) -> dict[ValidityKey, int]:
    """The windows in force between two institutions: each network they share may override a window;
    where several networks override the same key the shortest window wins (the stricter rule), and keys
    no network overrides keep the default."""
    merged: dict[ValidityKey, int] = {}
    for override in overrides:
        for raw, days in override.items():
            if isinstance(days, bool) or not isinstance(days, int) or days < 0:
                raise Invalid(f"validity window {raw!r} must be whole days >= 0, got {days!r}")
            key = parse_override_key(raw)
            merged[key] = min(days, merged.get(key, days))
    return {**defaults, **merged}
