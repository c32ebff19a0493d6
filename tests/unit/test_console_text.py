"""The console's translation table, language choice, Asia/Shanghai times and yuan from fen."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from telenet.web import i18n
from telenet.web.render import HERE, local_time, yuan


@pytest.mark.parametrize(
    ("cookie", "accept", "expected"),
    [
        (None, None, "zh-CN"),
        (None, "en-GB,en;q=0.8", "en"),
        (None, "zh-TW,zh;q=0.9,en;q=0.5", "zh-CN"),
        (None, "fr-FR,en;q=0.5", "en"),
        (None, "fr-FR", "zh-CN"),
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        ("klingon", "en", "en"),
    ],
)
def test_language_choice(cookie: str | None, accept: str | None, expected: str) -> None:
    assert i18n.choose(cookie, accept) == expected


def test_every_key_used_by_a_template_or_module_is_in_the_table_in_both_languages() -> None:
    used: set[str] = set()
    for path in [*(HERE / "templates").glob("*.html"), *HERE.glob("*.py")]:
        used |= set(
            re.findall(r"""\bt\(\s*'([a-z_]+\.[a-zA-Z0-9_.]*[a-zA-Z0-9_])'""", path.read_text(encoding="utf-8"))
        )
        used |= set(re.findall(r"""ctx\.t\("([a-z_]+\.[a-zA-Z0-9_.]+)"\)""", path.read_text(encoding="utf-8")))
    assert len(used) > 50
    assert sorted(used - set(i18n.TEXT)) == []
    for key, (zh, en) in i18n.TEXT.items():
        assert zh.strip() and en.strip(), key
        assert re.search(r"[\u4e00-\u9fff]", zh) or key.startswith(("ecg.", "lang.")), key
    # Keys built from values (state.*, kind.*, ...) exist for every value.
    from telenet.domain.lifecycle import ReturnReason

    for reason in ReturnReason:
        assert f"reason.{reason.value}" in i18n.TEXT
    for state in ("ordered", "queued", "claimed", "final", "returned", "cancelled"):
        assert f"state.{state}" in i18n.TEXT


def test_times_are_shown_in_shanghai() -> None:
    assert local_time("2026-03-02T02:00:00+00:00") == "2026-03-02 10:00"
    assert local_time(datetime(2026, 12, 31, 16, 30, tzinfo=UTC)) == "2027-01-01 00:30"
    assert local_time(None) == ""


@pytest.mark.parametrize(
    ("fen", "text"), [(0, "¥0.00"), (5, "¥0.05"), (12345, "¥123.45"), (-250, "-¥2.50"), (123456789, "¥1,234,567.89")]
)
def test_yuan_from_integer_fen(fen: int, text: str) -> None:
    assert yuan(fen) == text


def test_problem_codes_are_said_in_both_languages() -> None:
    assert i18n.problems("zh-CN")["consent-missing"].startswith("必须填写知情同意")
    assert i18n.problems("en")["consent-missing"].startswith("The patient's informed consent")
    assert set(i18n.problems("zh-CN")) == set(i18n.problems("en")) == set(i18n.PROBLEMS)
