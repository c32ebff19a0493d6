"""The hot paths cost few statements: submit, claim, final report and instance store are counted with
SQLAlchemy's ``before_cursor_execute`` and fail past the numbers the design reaches (docs/benchmarks.md,
"Statements per use case"). Everything the statement of a use case touches is counted, BEGIN included."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event

from telenet.services import outbox, queue, reports, requests, studies
from telenet.services.auth import actor_for_username
from telenet.services.request_views import view_of
from telenet.store.db import READ_ONLY
from tests.factories import order

# The most statements each use case may issue, per engine (see docs/benchmarks.md).
LIMITS: dict[str, dict[str, int]] = {
    "submit": {"sqlite": 10, "postgresql": 10},
    "claim": {"sqlite": 7, "postgresql": 7},
    # The center, institutions, agreement and fee schedule of the fee line come from the registry snapshot; the
    # ORU's destination (an HIS endpoint) and the signer's qualification (issue 15) are still read.
    "final_report": {"sqlite": 18, "postgresql": 18},
    "store_instance": {"sqlite": 7, "postgresql": 6},
    "outbox_claim": {"sqlite": 2, "postgresql": 1},
}


@contextlib.contextmanager
def counted(engine: Any, *, reads: bool = False) -> Iterator[list[str]]:
    """The statements of the write transactions (views are read after commit on read sessions); with
    ``reads``, those of the read sessions instead, BEGIN left out."""
    statements: list[str] = []

    def count(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if reads:
            if conn.get_execution_options().get(READ_ONLY) and statement.strip().upper() != "BEGIN":
                statements.append(statement)
        elif not conn.get_execution_options().get(READ_ONLY):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


def _record(accession: str, n: int, patient_id: str = "P0001") -> studies.InstanceRecord:
    return studies.InstanceRecord(
        sop_instance_uid=f"1.2.826.0.1.3680043.10.9999.{n}.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.826.0.1.3680043.10.9999.1",
        series_instance_uid="1.2.826.0.1.3680043.10.9999.1.2",
        path=f"/nonexistent/{n}.dcm",
        size_bytes=1000,
        accession_number=accession,
        patient_name="张三",
        patient_id=patient_id,  # the order's patient: a contradicting one is never linked automatically
        modality="CT",
        instance_number=n,
    )


async def test_hot_paths_stay_within_their_statement_counts(demo_hub: Any, database: Any) -> None:
    hub = demo_hub
    engine = database.engine
    doc = await actor_for_username(hub, "township_doc")
    his = await actor_for_username(hub, "his_t01")
    reader = await actor_for_username(hub, "county_reader")
    counts: dict[str, int] = {}
    seen: dict[str, list[str]] = {}

    await requests.submit(hub, doc, order(patient_id="W1"))  # the first order warms caches and the patient
    with counted(engine) as statements:
        view = await requests.submit(hub, doc, order(patient_id="W2", serial=2))
    counts["submit"], seen["submit"] = len(statements), list(statements)
    registry_reads = [s for s in statements if re.search(r"FROM (institutions|centers|agreements|routing_rules)\b", s)]
    assert registry_reads == [], "routing reads the registry from the in-memory snapshot, not the tables"
    request_id = int(view["id"])
    await requests.data_complete(hub, his, request_id)

    with counted(engine) as statements:
        await queue.claim(hub, reader, request_id)
    counts["claim"], seen["claim"] = len(statements), list(statements)

    final = {"findings": "双肺纹理清晰，未见实变。", "impression": "胸部正位片未见明显异常。", "final": True}
    with counted(engine) as statements:
        await reports.report(hub, reader, request_id, final)
    counts["final_report"], seen["final_report"] = len(statements), list(statements)

    with counted(engine) as statements:
        claims = await outbox.claim_due(hub, owner="counter", now=hub.clock.now(), lease_seconds=60)
    counts["outbox_claim"], seen["outbox_claim"] = len(statements), list(statements)
    assert len(claims) == 1, "the final report's ORU is claimed"

    other = await requests.submit(hub, doc, order(patient_id="W3", serial=3))
    ae = await studies.ae_actor(hub, "C01K01T01")
    assert ae is not None
    first = await studies.store_instance(hub, ae, _record(str(other["accession_number"]), 1, "W3"))
    assert first.request_id == other["id"], "the study is linked to its order (the counted path)"
    with counted(engine) as statements:
        await studies.store_instance(hub, ae, _record(str(other["accession_number"]), 2, "W3"))
    counts["store_instance"], seen["store_instance"] = len(statements), list(statements)

    over = {
        name: "\n".join(s.split("\n")[0][:120] for s in seen[name])
        for name, count in counts.items()
        if count > LIMITS[name][engine.dialect.name]
    }
    assert not over, f"statements per use case {counts} (limits {LIMITS}); over the limit:\n{over}"


async def test_peer_checks_read_the_registry_snapshot_not_the_tables(demo_hub: Any, database: Any) -> None:
    """Every HL7 message checks its MSH-4 and every association its calling AE title against the peers the
    institution registered: from the snapshot, with no statement at all (under a province's burst these reads
    emptied the connection pool)."""
    from telenet.services import peers

    identity = peers.PeerIdentity(address="127.0.0.1")
    await peers.check_facility(demo_hub, "NL-PROV", identity)  # loads the snapshot once
    engine = database.engine
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)  # reads too

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await peers.check_facility(demo_hub, "NL-PROV", identity) is None
        assert await peers.check_facility(demo_hub, "NO-SUCH-FACILITY", identity) is None
        assert await peers.check_ae_title(demo_hub, "C01", identity) is None
        assert await peers.check_ae_title(demo_hub, "NOSUCHAE", identity) is None
        # The DICOM node's list of registered calling AE titles, reloaded every 30 s: from the snapshot too.
        titles = await studies.registered_ae_titles(demo_hub)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert statements == [], statements
    assert "C01K01T01" in titles and len(titles) == len((await demo_hub.registry.get()).ae_titles)


async def test_the_view_of_a_new_request_reads_no_reports_findings_or_participants(
    demo_hub: Any, database: Any
) -> None:
    """The view a command answers with is read whole, but what a request does not have yet (reports, critical
    findings, participants) is known from the request's own statement: two statements after BEGIN, not five."""
    hub = demo_hub
    doc = await actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, doc, order(patient_id="V1"))
    with counted(database.engine, reads=True) as reads:
        again = await view_of(hub, doc, int(view["id"]))
    assert again == view
    assert len(reads) == 2, "\n".join(s.split("\n")[0][:100] for s in reads)
