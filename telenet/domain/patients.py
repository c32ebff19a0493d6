"""Patient identity rules: the national id number (居民身份证号码) is validated, keyed-hashed and never kept."""

from __future__ import annotations

import hashlib
import hmac
import re

from telenet.domain.errors import Invalid

_NATIONAL_ID = re.compile(r"^[0-9]{17}[0-9X]$")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def national_id_check_char(first17: str) -> str:
    """The check character of GB 11643-1999 (ISO 7064 MOD 11-2) for the first 17 digits."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def normalize_national_id(value: str) -> str:
    """Upper-case, strip, and check the 18-character form and its check character (422 when wrong)."""
    text = value.strip().upper()
    if not _NATIONAL_ID.match(text):
        raise Invalid("the national id number must be 17 digits and a check digit or X", code="bad-national-id")
    if national_id_check_char(text[:17]) != text[17]:
        raise Invalid("the national id number's check digit is wrong", code="bad-national-id")
    return text


def national_id_hmac(secret: bytes, national_id: str) -> str:
    """HMAC-SHA256 under the server secret: equal ids match across institutions, the id cannot be read back."""
    return hmac.new(secret, normalize_national_id(national_id).encode(), hashlib.sha256).hexdigest()


def last4(national_id: str) -> str:
    """What is kept of the id to show (the column's historical name): its check character only, as ``***X``.
    The last four would not do: with the birth date and the region (the clinic's county) they rebuild the
    whole number, since the check character follows from the other seventeen."""
    return "***" + normalize_national_id(national_id)[-1]


def masked_national_id(kept: str | None) -> str | None:
    """The 18-character display form of what :func:`last4` kept: ``*****************X``."""
    return None if not kept else "*" * 17 + kept[-1]


_MASKED = re.compile(r"^\*{17}[0-9X]$")


def is_masked_national_id(value: str) -> bool:
    return bool(_MASKED.match(value.strip().upper()))


_ID_IN_TEXT = re.compile(rb"(?<![0-9])([0-9]{17})([0-9Xx])(?![0-9])")


def mask_national_ids(raw: bytes) -> bytes:
    """Every valid national id number inside a message (dead letters keep messages for inspection)
    replaced by its masked form; numbers whose check character does not match are left alone."""

    def replace(match: re.Match[bytes]) -> bytes:
        first17, check = match.group(1).decode(), match.group(2).decode().upper()
        return b"*" * 17 + check.encode() if national_id_check_char(first17) == check else match.group(0)

    return _ID_IN_TEXT.sub(replace, raw)


SEXES = frozenset({"M", "F", "O", "U"})
