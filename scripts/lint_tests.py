"""An AST lint over the test suite: assertions that cannot fail and tests that test nothing.

    python scripts/lint_tests.py [PATH ...]      (default: tests/)

It reports, with file and line, and exits 1 when it finds any of:

- ``constant-assert``: an ``assert`` whose test is a constant that is always true (``assert True``,
  ``assert 1``, ``assert "text"``) or a non-empty literal (``assert (x == 1, "message")`` is a tuple, true
  whatever ``x`` is), or an ``or`` with such an operand.
- ``vacuous-or``: ``assert A or B`` where ``B`` is a bare name, attribute or subscript that also occurs
  inside ``A`` (``assert x == "v" or x``): whenever ``A`` can be evaluated, ``B`` is just "it exists", so
  the assertion passes for any non-empty value. Say what ``B`` must be, or assert ``A`` alone.
- ``empty-test``: a ``test_*`` function whose body is only ``pass``, ``...`` and/or a docstring.

Run in ``make test`` (the ``lint`` target) and by ``tests/unit/test_lint_tests.py``, which also holds the
offending and clean samples this lint is proven on.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code} {self.message}"


def _always_true(node: ast.expr) -> bool:
    """A constant or literal whose truth does not depend on anything the test computes."""
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return len(node.elts) > 0
    if isinstance(node, ast.Dict):
        return len(node.keys) > 0
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.Constant) and part.value for part in node.values)
    if isinstance(node, (ast.Lambda, ast.GeneratorExp)):
        return True  # a function or a generator object is true, whatever it would yield
    return False


def _bare(node: ast.expr) -> bool:
    """A value used only for its truth: ``x``, ``a.b``, ``a["k"]``."""
    return isinstance(node, (ast.Name, ast.Attribute, ast.Subscript))


def _subexpressions(node: ast.AST) -> Iterator[str]:
    for child in ast.walk(node):
        if isinstance(child, (ast.Name, ast.Attribute, ast.Subscript)):
            yield ast.dump(child, annotate_fields=False, include_attributes=False)


def _check_assert(node: ast.Assert, path: str) -> Iterator[Finding]:
    test = node.test
    if _always_true(test):
        yield Finding(path, node.lineno, "constant-assert", f"assert {ast.unparse(test)} always passes")
        return
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        earlier: set[str] = set()
        for index, operand in enumerate(test.values):
            if _always_true(operand):
                yield Finding(
                    path,
                    node.lineno,
                    "constant-assert",
                    f"assert {ast.unparse(test)} always passes: {ast.unparse(operand)} is always true",
                )
                return
            if index > 0 and _bare(operand):
                key = ast.dump(operand, annotate_fields=False, include_attributes=False)
                if key in earlier:
                    yield Finding(
                        path,
                        node.lineno,
                        "vacuous-or",
                        f"assert {ast.unparse(test)}: {ast.unparse(operand)} is true whenever it is non-empty, "
                        "so the assertion passes whatever the earlier comparison says",
                    )
                    return
            earlier.update(_subexpressions(operand))


def _only_nothing(body: list[ast.stmt]) -> bool:
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            if stmt.value.value is Ellipsis or isinstance(stmt.value.value, str):
                continue
        return False
    return True


def lint_source(source: str, path: str = "<string>") -> list[Finding]:
    """Every finding in one module's source."""
    tree = ast.parse(source, filename=path)
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            findings.extend(_check_assert(node, path))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if _only_nothing(node.body):
                findings.append(
                    Finding(path, node.lineno, "empty-test", f"{node.name} has no body: it passes without testing")
                )
    return sorted(findings, key=lambda f: (f.path, f.line, f.code))


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        else:
            yield path


def lint_paths(paths: Iterable[Path]) -> list[Finding]:
    findings: list[Finding] = []
    for file in python_files(paths):
        findings.extend(lint_source(file.read_text(encoding="utf-8"), str(file)))
    return findings


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv] or [Path(__file__).resolve().parent.parent / "tests"]
    findings = lint_paths(roots)
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} finding(s): assertions that cannot fail, or tests without a body", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
