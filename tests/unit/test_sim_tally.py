"""The simulator's summary keeps unfinished orders apart from lost ones and lists every acknowledged order
(the province peak checks each of them in the database afterwards)."""

from __future__ import annotations

from telenet.sim.tally import STILL_WORKING, Tally, Tracked


def test_unfinished_lost_and_never_acknowledged_are_counted_apart() -> None:
    tally = Tally()
    tally.add(Tracked("A1", "imaging", "routine", "T01", ack="AA", state="final", results=["F"]))
    tally.add(Tracked("A2", "imaging", "routine", "T01", ack="AA", state="queued", center="C1"))
    tally.add(Tracked("A3", "ecg", "routine", "T01", ack="AA", state="final"))  # final, but no ORU arrived
    tally.add(Tracked("A4", "imaging", "routine", "T01", ack=None))
    summary = tally.summary(readers={"C1"})
    assert summary["unfinished"] == 2
    assert summary["explained_unfinished"] == {STILL_WORKING: 1}
    assert summary["lost"] == 1 and summary["lost_accessions"] == ["A3"]
    assert summary["never_acknowledged"] == 1
    assert summary["acknowledged"] == {"A1": "imaging", "A2": "imaging", "A3": "ecg"}
