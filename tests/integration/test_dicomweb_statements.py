"""The structural costs of the DICOMweb paths, as SQL statements (the benchmark's figures are in
docs/benchmarks.md): a STOW-RS of one series indexes its instances with one multi-row statement per table
(one by one, as before, when the run has a duplicate); a QIDO-RS study search is one SELECT on a read
snapshot, its audit rows written in a batch; a WADO-RS locate reads the study's files in one query."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select

from telenet.store.models import AuditEntry, DicomStudy
from tests.dicomweb_fixtures import study, web_for


class Seen(list[str]):
    """Statements in order, and which connection sent each."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[int] = []

    def begun_with(self, statement: str) -> str:
        """How the transaction that ran ``statement`` began ("BEGIN" or "BEGIN IMMEDIATE")."""
        index = self.index(statement)
        conn = self.connections[index]
        for i in range(index - 1, -1, -1):
            if self.connections[i] == conn and self[i].startswith("BEGIN"):
                return self[i]
        return ""


@contextmanager
def statements(engine: Any) -> Iterator[Seen]:
    """The SQL statements the engine sends while the block runs (an executemany counts once)."""
    seen = Seen()

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))
        seen.connections.append(id(conn.connection.dbapi_connection))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def count(seen: Seen, prefix: str) -> int:
    return sum(1 for s in seen if s.startswith(prefix))


async def _instance_count(client: Any, uid: str) -> int:
    async with client.hub.reader() as session:
        return int(
            (
                await session.execute(select(DicomStudy.instance_count).where(DicomStudy.study_instance_uid == uid))
            ).scalar_one()
        )


async def test_stow_of_a_series_is_one_insert_per_table_and_a_duplicate_one_by_one(client: Any, database: Any) -> None:
    web = await web_for(client, "township_doc")
    series = study(6, patient_id="P-BULK")
    uid = str(series[0].StudyInstanceUID)
    with statements(database.engine) as seen:
        answer = await web.call(lambda c: c.store_instances(series))
    assert len(answer.ReferencedSOPSequence) == 6 and "FailedSOPSequence" not in answer
    assert count(seen, "INSERT INTO dicom_instances") == 1, "one multi-row insert for the six instances"
    assert count(seen, "INSERT INTO audit") == 1, "their six audit rows in one statement"
    assert count(seen, "UPDATE dicom_studies") == 1 and count(seen, "UPDATE dicom_series") == 1
    assert await _instance_count(client, uid) == 6
    async with client.hub.reader() as session:
        audited = (
            await session.execute(
                select(func.count()).where(AuditEntry.action == "dicom.store", AuditEntry.outcome == "ok")
            )
        ).scalar_one()
    assert audited == 6, "one audit row per instance, as one by one"

    # A run with a duplicate is indexed one by one, as before.
    series = study(4, patient_id="P-DUP")
    uid = str(series[0].StudyInstanceUID)
    await web.call(lambda c: c.store_instances(series[:2]))
    with statements(database.engine) as seen:
        answer = await web.call(lambda c: c.store_instances(series[1:]))
    referenced = [r.ReferencedSOPInstanceUID for r in answer.ReferencedSOPSequence]
    assert referenced == [ds.SOPInstanceUID for ds in series[1:]], "the duplicate is answered as stored"
    # One by one, each instance is one INSERT … ON CONFLICT DO NOTHING; the duplicate's inserts nothing and its
    # savepoint is rolled back (so its counters do not move).
    assert count(seen, "INSERT INTO dicom_instances") == 3, "an insert per instance, one by one"
    assert count(seen, "ROLLBACK TO SAVEPOINT") == 2, "the refused bulk run and the duplicate roll back alone"
    assert await _instance_count(client, uid) == 4, "the duplicate counted once"


async def test_qido_search_and_wado_locate_read_without_the_write_lock(client: Any, database: Any) -> None:
    web = await web_for(client, "township_doc")
    for n in range(3):
        datasets = study(2, patient_id=f"P-Q{n}")
        await web.call(lambda c: c.store_instances(datasets))  # noqa: B023 - awaited at once
    with statements(database.engine) as seen:
        found = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P-Q*"}))
    assert len(found) == 3 and all(f["00201206"]["Value"] == [1] for f in found), "series counted in the query"
    searches = [s for s in seen if s.startswith("SELECT") and "dicom_" in s]
    assert len(searches) == 1, searches  # the studies with their series counted, no second query
    assert count(seen, "UPDATE") == 0 and count(seen, "INSERT INTO dicom") == 0
    assert count(seen, "INSERT INTO audit") <= 2, "the search's row and the three per-study rows in a batch"
    if database.kind == "sqlite":
        # one SELECT, its own snapshot: no BEGIN at all, so it never waits for (or holds) the write lock
        assert seen.begun_with(searches[0]) == ""

    # WADO-RS: the files of the study in scope, with its owner and patient for the audit, in one SELECT.
    series = study(5, patient_id="P-W")
    await web.call(lambda c: c.store_instances(series))
    uid = str(series[0].StudyInstanceUID)
    with statements(database.engine) as seen:
        retrieved = await web.call(lambda c: c.retrieve_study(uid))
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in series)
    reads = [s for s in seen if s.startswith("SELECT") and "dicom_" in s]
    assert len(reads) == 1, reads
    assert count(seen, "INSERT INTO audit") <= 2 and count(seen, "UPDATE") == 0
    if database.kind == "sqlite":
        assert seen.begun_with(reads[0]) == "", "the locate reads without any transaction, so without the lock"


async def test_searches_of_one_shape_share_one_statement_and_each_gets_its_own_answer(client: Any) -> None:
    """The QIDO-RS statement is built once per scope and shape (which keys, matched how) and reused with other
    values: the second search builds nothing, and still answers for its own values; a wildcard is another
    shape, and so is another caller's scope."""
    from telenet.services import study_search

    web = await web_for(client, "township_doc")
    for patient in ("P-SHAPE-1", "P-SHAPE-2"):
        datasets = study(1, patient_id=patient)
        await web.call(lambda c: c.store_instances(datasets))  # noqa: B023 - awaited at once
    study_search._SEARCH_SQL.clear()
    first = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P-SHAPE-1"}))
    assert len(study_search._SEARCH_SQL) == 1
    second = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P-SHAPE-2"}))
    assert len(study_search._SEARCH_SQL) == 1, "the same shape: the same statement"
    assert [f["00100020"]["Value"] for f in first] == [["P-SHAPE-1"]]
    assert [f["00100020"]["Value"] for f in second] == [["P-SHAPE-2"]]
    both = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P-SHAPE-?"}))
    assert sorted(f["00100020"]["Value"][0] for f in both) == ["P-SHAPE-1", "P-SHAPE-2"]
    assert len(study_search._SEARCH_SQL) == 2, "a wildcard is another shape"
    other = await web_for(client, "township_doc2")
    assert await other.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P-SHAPE-1"})) == []
    assert len(study_search._SEARCH_SQL) == 3, "another scope, another statement"
