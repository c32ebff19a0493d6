"""services/requests.py and services/studies.py never import each other (not even inside a function): the
follow-up work between them is wired once in telenet.app through hub.follow_ups."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "telenet" / "services"


def _imported(module: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse((SERVICES / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_requests_and_studies_do_not_import_each_other() -> None:
    assert "telenet.services.studies" not in _imported("requests")
    assert "telenet.services.requests" not in _imported("studies")


def test_queue_and_reports_reach_follow_ups_through_the_hub() -> None:
    assert "telenet.services.studies" not in _imported("queue")
    assert "telenet.services.fees" not in _imported("reports")
