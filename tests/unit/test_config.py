"""Settings: defaults, TOML, environment precedence, clear errors, documentation of every field."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from telenet.config import Settings, load_settings, settings_documentation
from telenet.domain.errors import Invalid


def test_defaults_work_without_configuration() -> None:
    s = load_settings(environ={})
    assert s.database_url == "sqlite+aiosqlite:///./var/telenet.db"
    assert (s.http_host, s.http_port, s.dicom_port, s.hl7_port) == ("127.0.0.1", 8080, 11112, 2575)
    assert s.resolved_secret_file == Path("var/secret.key")


def test_environment_overrides_toml_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "telenet.toml"
    toml.write_text("[telenet]\nhttp_port = 9000\nhl7_port = 2600\ndicom_enabled = false\n", encoding="utf-8")
    s = load_settings(toml, environ={"TELENET_HTTP_PORT": "9100", "TELENET_STUDY_QUIET_SECONDS": "0.2"})
    assert (s.http_port, s.hl7_port, s.dicom_enabled, s.study_quiet_seconds) == (9100, 2600, False, 0.2)


def test_settings_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        load_settings(environ={}).http_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [({"TELENET_HTTP_PORT": "eighty"}, "http_port"), ({"TELENET_DICOM_ENABLED": "maybe"}, "dicom_enabled")],
)
def test_bad_values_are_clear_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(Invalid, match=fragment):
        load_settings(environ=env)


def test_unknown_toml_key_and_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("htp_port = 1\n", encoding="utf-8")
    with pytest.raises(Invalid, match="unknown setting 'htp_port'"):
        load_settings(bad, environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("http_port = \n", encoding="utf-8")
    with pytest.raises(Invalid, match=r"broken\.toml"):
        load_settings(broken, environ={})


def test_every_setting_is_documented() -> None:
    doc = settings_documentation()
    for f in fields(Settings):
        assert f.metadata.get("doc"), f.name
        assert f"TELENET_{f.name.upper()}" in doc
