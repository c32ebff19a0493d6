"""Bounded REST fuzzing with schemathesis against ``/api/v1/openapi.json``, served by the real app on
loopback: for every operation, schemathesis's coverage cases (each parameter and body property missing,
empty, at and past its bounds, of another type, unexpected methods), then random cases built from its
parameters and body as the document describes them (positive) and cases that break the description
(negative), each sent with a token of a role the operation
serves. Checks: no 5xx, the response is what the document says, schema-valid requests are accepted and
invalid ones rejected (the validation-mismatch checks), every error is problem JSON; the database holds no
partial rows after each operation's batch. The operations are dealt round-robin into SHARDS tests, each in its
own xdist group, so that the suite's workers share the work (schemathesis's generation costs most of it)."""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
)
from sqlalchemy import select

from telenet.services.auth import token_digest
from telenet.store.models import Token, User
from tests.fuzz_checks import partial_rows, scaled

#: Tests the operations are dealt into; each sends at least its share of TOTAL_CASES.
SHARDS = 2

pytestmark = [
    pytest.mark.parametrize("database", ["sqlite"], indirect=True),
    pytest.mark.fuzz,
    # One shard alone takes about two minutes on a 2-core machine; under the suite's load up to three times that.
    pytest.mark.timeout(600),
]

#: Random cases per operation and mode (an operation without parameters has one case per mode), after the
#: coverage cases (schemathesis's deterministic boundary and negation cases: every parameter missing, empty,
#: at and past each bound, of each wrong type; about 4,500 for the whole document).
POSITIVE_PER_OPERATION = scaled(50)
NEGATIVE_PER_OPERATION = scaled(25)
TOTAL_CASES = scaled(10_000)
#: How long one case may wait for its answer: a server that does not answer within it has stopped (a lock
#: held by nobody, a loop blocked), and the test ends there with the server's pending tasks instead of
#: waiting this long for each of the thousands of cases left.
ANSWER_TIMEOUT_S = 30
#: Tokens for the logout cases (each ends the one it presents): its random and coverage cases.
LOGOUT_TOKENS = POSITIVE_PER_OPERATION + NEGATIVE_PER_OPERATION + 100
#: One role per kind of operation, so that the checks reach the validation behind each role gate.
ROLES = ("township_doc", "county_reader", "county_coord", "province_admin", "his_t01")
#: WebSockets (a plain GET is refused before anything is read) are fuzzed by their own tests.
SKIPPED = {"/api/v1/ws", "/api/v1/consultations/{id}/ws"}
CHECKS = [not_a_server_error, response_schema_conformance, positive_data_acceptance, negative_data_rejection]
#: Operations whose valid input JSON Schema cannot describe: DICOMweb (QIDO attribute keywords, DICOM dates
#: and UID lists, multipart DICOM bodies) and attachments (the file's own format). They get every check but
#: the positive one; their bodies are fuzzed by tests/integration/test_fuzz_dicom.py.
BEYOND_JSON_SCHEMA = ("/dicom-web/", "/api/v1/requests/{id}/attachments")
#: 422s that depend on the state of the network, not on the request's shape (routing finds no center; an
#: unknown participant), or on two parameters at once (to before from): a schema-valid request may get them.
#: Refusals of a request's shape: the body's JSON Schema, its media type and size, the parameters as read.
#: A schema-valid request must never get one of these; the document and the validation would disagree.
SHAPE_CODES = {"schema-violation", "bad-json", "json-too-deep", "bad-content-type", "bad-parameter", "bad-time"}
#: A shape refusal that the document cannot state: two parameters at once.
CROSS_PARAMETER = ("to must be after from",)


def refused_by_service_rule(response: Any) -> bool:
    """A 4xx that is not about the request's shape: the service's rules (the state of the network, a check digit,
    a critical finding's items, ...), each with its own problem code; a schema-valid request may get one."""
    if response.status_code not in (400, 422):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    code = str(body.get("type", "")).removeprefix("urn:telenet:problem:")
    return code not in SHAPE_CODES or any(text in str(body.get("detail")) for text in CROSS_PARAMETER)


def role_for(operation: Any) -> str:
    roles = (operation.definition.raw.get("description") or "").lower()
    if "admin" in roles and not any(r in roles for r in ("requester", "reader", "coordinator")):
        return "province_admin"
    for hint, role in (
        ("integration", "his_t01"),
        ("requester", "township_doc"),
        ("requesting", "township_doc"),
        ("coordinator", "county_coord"),
        ("reader", "county_reader"),
    ):
        if hint in roles:
            return role
    return ROLES[hash(operation.label) % len(ROLES)]


async def fresh_tokens(hub: Any, username: str, count: int) -> list[str]:
    """Tokens minted straight into the table (a login costs a slow hash): for the logout cases, each of which
    ends the token it presents."""
    now = hub.clock.now()
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    async with hub.sessions() as session:
        user_id = (await session.execute(select(User.id).where(User.username == username))).scalar_one()
        for token in tokens:
            session.add(
                Token(token_hash=token_digest(token), user_id=user_id, created_at=now, expires_at=now + timedelta(1))
            )
        await session.commit()
    return tokens


def problem_json_on_errors(response: Any, case: Any) -> str | None:
    """An error is problem JSON (RFC 9457), whatever the operation."""
    if response.status_code < 400:
        return None
    media = next((v for k, v in response.headers.items() if k.lower() == "content-type"), "")
    media = media[0] if isinstance(media, list) else media
    if response.status_code == 400 and "Got more than" in response.text:
        return None  # aiohttp's HTTP parser refused an over-long request line before the app saw it
    if not str(media).startswith("application/problem+json"):
        return f"{case.method} {case.formatted_path}: {response.status_code} as {media!r}: {response.text[:200]}"
    return None


def auth_negated(case: Any) -> bool:
    """A negative case whose negated header is the bearer token itself: sent without one (401 expected)."""
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta is not None else None
    return header is not None and header.mode.is_negative and "Authorization" not in (case.headers or {})


class Sender:
    """Sends the cases of one operation with a token of its role and collects what the checks found."""

    def __init__(
        self, operation: Any, base_url: str, headers: dict[str, str], logout_tokens: list[str], failures: list[str]
    ) -> None:
        self.operation = operation
        self.base_url = base_url
        self.headers = headers
        self.logout_tokens = logout_tokens
        self.failures = failures
        self.session = requests.Session()
        beyond = any(part in operation.path for part in BEYOND_JSON_SCHEMA)
        self.checks = [c for c in CHECKS if not (beyond and c is positive_data_acceptance)]
        self.ran: Counter[str] = Counter()
        #: The case the server did not answer in time (the test stops sending there).
        self.unanswered: str | None = None

    def send(self, case: Any, kind: str, label: str) -> None:
        if self.unanswered is not None:
            return
        sent = {} if auth_negated(case) else dict(self.headers)
        if self.operation.path == "/api/v1/auth/logout" and self.logout_tokens and sent:
            sent["Authorization"] = f"Bearer {self.logout_tokens.pop()}"
        try:
            response = case.call(base_url=self.base_url, session=self.session, headers=sent, timeout=ANSWER_TIMEOUT_S)
        except requests.RequestException as exc:
            self.unanswered = f"{label}: {case.method} {case.formatted_path}: {type(exc).__name__}: {exc}"
            return
        self.ran[kind] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=sent)
        except (Exception, BaseExceptionGroup) as exc:  # a check failed: keep going, report them all
            positive = case.meta is None or not case.meta.generation.mode.is_negative
            if not (positive and refused_by_service_rule(response)):
                self.failures.append(f"{label}: {str(exc)[:600]}")
        if (problem := problem_json_on_errors(response, case)) is not None:
            self.failures.append(problem)


def fuzz_operation(schema: Any, sender: Sender) -> Counter[str]:
    """Send the coverage cases of one operation, then its random cases of both modes; how many ran of each."""
    try:
        fuzz_coverage(schema, sender)
        for mode, count in (
            (GenerationMode.POSITIVE, POSITIVE_PER_OPERATION),
            (GenerationMode.NEGATIVE, NEGATIVE_PER_OPERATION),
        ):
            fuzz_mode(sender, mode, count)
    finally:
        sender.session.close()
    return sender.ran


def fuzz_coverage(schema: Any, sender: Sender) -> None:
    operation = sender.operation
    label = f"{operation.label} [coverage]"
    cases = schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation, phase="coverage"),
    )
    try:
        for case in cases:
            sender.send(case, "coverage", label)
    except (Exception, BaseExceptionGroup) as exc:
        sender.failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:600]}")


def fuzz_mode(sender: Sender, mode: GenerationMode, count: int) -> None:
    label = f"{sender.operation.label} [{mode.value}]"

    @settings(
        max_examples=count, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck), derandomize=True,
    )  # fmt: skip
    @given(case=sender.operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        sender.send(case, mode.value, label)

    try:
        send()
    except Unsatisfiable:
        pass  # nothing to negate (an operation without parameters): its one positive case ran
    except (Exception, BaseExceptionGroup) as exc:
        sender.failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:600]}")


def pending_tasks() -> str:
    """The stacks of the event loop's tasks but the caller's: what a server that stopped answering waits on."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=12, file=out)
    return out.getvalue()[-6000:]


@pytest.mark.parametrize(
    "shard", [pytest.param(i, marks=pytest.mark.xdist_group(f"fuzz-rest-{i}")) for i in range(SHARDS)]
)
async def test_ten_thousand_schemathesis_cases_find_no_5xx_no_schema_mismatch_and_no_partial_rows(
    client: Any, shard: int
) -> None:
    document = await (await client.get("/api/v1/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    tokens = {username: await client.login(username) for username in ROLES}
    logout_tokens = await fresh_tokens(client.hub, "township_doc2", LOGOUT_TOKENS)
    base_url = str(client.make_url("")).rstrip("/")
    failures: list[str] = []
    ran: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in SKIPPED][shard::SHARDS]
    started = time.monotonic()
    for operation in operations:
        headers = tokens[role_for(operation)]
        sender = Sender(operation, base_url, headers, logout_tokens, failures)
        ran += await asyncio.to_thread(fuzz_operation, schema, sender)
        assert sender.unanswered is None, f"the server gave no answer to {sender.unanswered}; its pending " + (
            f"tasks:\n{pending_tasks()}"
        )
        assert await partial_rows(client.hub) == [], operation.label
    elapsed = time.monotonic() - started
    kinds = Counter(
        (f.split(":", 1)[0], *(re.findall(r'"type": "urn:telenet:problem:([\w-]+)"', f)[:1] or [f[:160]]))
        for f in failures
    )
    summary = f"{len(failures)} failures in {ran.total()} cases ({elapsed:.0f} s): {kinds.most_common()}"
    print(summary, dict(ran))  # shown with -rP: each shard's share of the cases
    assert not failures, summary + "\n" + "\n\n".join(failures[:20])
    assert ran.total() >= TOTAL_CASES // SHARDS and ran["coverage"] and ran["positive"] and ran["negative"], ran
