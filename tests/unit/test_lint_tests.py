"""The test-suite lint (scripts/lint_tests.py): each rule on offending and clean samples, and the suite itself
is clean, so an assertion that cannot fail or an empty test fails ``make test``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lint_tests.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lint_tests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lint_tests"] = module
    spec.loader.exec_module(module)
    return module


lint = _load()


def codes(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in lint.lint_source(textwrap.dedent(source), "sample.py")]


@pytest.mark.parametrize(
    "line",
    [
        "assert True",
        "assert 1",
        'assert "always"',
        'assert (x == 1, "x is one")',
        "assert [x]",
        "assert {'k': x}",
        'assert f"value {x}"',
        "assert lambda: x == 1",
        "assert x == 1 or True",
        'assert x == 1 or "fallback"',
    ],
)
def test_constant_truthy_asserts_are_found(line: str) -> None:
    assert codes(f"def test_a(x):\n    {line}\n") == [(2, "constant-assert")]


@pytest.mark.parametrize(
    "line",
    [
        'assert acked["acknowledged_by"] == "township_doc" or acked["acknowledged_by"]',
        'assert x == "v" or x',
        "assert obj.name == 'a' or obj.name",
        "assert len(items) == 3 or items",
        "assert a > 1 or b < 2 or a",
    ],
)
def test_or_whose_tail_is_an_operand_of_the_head_is_found(line: str) -> None:
    assert codes(f"def test_a(x, obj, items, a, b, acked):\n    {line}\n") == [(2, "vacuous-or")]


@pytest.mark.parametrize(
    "body",
    [
        "pass",
        "...",
        '"""A docstring and nothing else."""',
        '"""Docstring."""\n    pass',
    ],
)
def test_test_functions_without_a_body_are_found(body: str) -> None:
    assert codes(f"def test_nothing():\n    {body}\n") == [(1, "empty-test")]
    assert codes(f"async def test_nothing():\n    {body}\n") == [(1, "empty-test")]


def test_methods_of_test_classes_are_checked() -> None:
    assert codes("class TestThing:\n    def test_x(self):\n        pass\n") == [(2, "empty-test")]


@pytest.mark.parametrize(
    "source",
    [
        "def test_a(x):\n    assert x == 1\n",
        "def test_a(x):\n    assert x == 1, 'a message is fine'\n",
        "def test_a(x):\n    assert x is None or x.ready\n",  # the tail is not in the head: a real implication
        "def test_a(x, y):\n    assert x == 1 or y == 2\n",
        "def test_a(x):\n    assert not x or x['k'] == 3\n",
        "def test_a(x):\n    assert x\n",
        "def test_a(x):\n    assert ()\n",  # an empty tuple is false: this assertion fails, it is not vacuous
        "def helper():\n    pass\n",  # not a test
        "def test_a():\n    '''Doc.'''\n    assert compute() == 2\n",
    ],
)
def test_clean_samples_pass(source: str) -> None:
    assert codes(source) == []


def test_findings_name_file_and_line(tmp_path: Path) -> None:
    sample = tmp_path / "test_bad.py"
    sample.write_text("def test_a(x):\n    x = 1\n    assert True\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stdout.strip() == f"{sample}:3: constant-assert assert True always passes"


def test_the_suite_is_clean() -> None:
    """The lint over tests/ itself: a new assertion that cannot fail, or an empty test, fails here."""
    findings = lint.lint_paths([ROOT / "tests"])
    assert [str(f) for f in findings] == []
