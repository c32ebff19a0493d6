"""The whole brokering story in one test, over REST and the live channel: a township orders an ECG read, it
reaches the county ECG center's queue, a cardiologist claims and signs it, the clinic sees it go final live;
the critical finding it carries is not acknowledged in time and escalates, then is acknowledged."""

from __future__ import annotations

import json
from typing import Any

from telenet.services.sweeper import sweep_once
from tests.factories import order
from tests.integration.test_requests_api import act, create
from tests.integration.test_websocket import live_ws, recv, recv_until, subscribe, token_of


async def test_ecg_story_with_unacknowledged_critical_finding(client: Any) -> None:
    clinic_ws = live_ws(client, await token_of(client, "township_doc"))
    reader_ws = live_ws(client, await token_of(client, "county_reader"))
    admin_ws = live_ws(client, await token_of(client, "county_admin"))
    async with clinic_ws as clinic, reader_ws as reader, admin_ws as admin:
        await subscribe(clinic, ["requests:NL-C01-K01-T01"])
        await subscribe(reader, ["worklist:NL-C01-K01-ECG"])
        await subscribe(admin, ["requests:NL-C01-K01-T01"])

        view = await create(
            client, body=order("ecg", modality="ECG", priority="stat", clinical_question="胸痛30分钟，大汗")
        )
        assert view["center"]["code"] == "NL-C01-K01-ECG"
        assert (await recv(reader))["name"] == "request.ordered"
        await act(client, "his_t01", view["id"], "data-complete", {"signal": "ecg"})
        queued = await recv(reader)
        assert queued["name"] == "request.queued" and queued["data"]["due_at"] == "2026-03-02T02:10:00+00:00"

        worklist = await (
            await client.get("/api/v1/centers/NL-C01-K01-ECG/worklist", headers=await client.login("county_reader"))
        ).json()
        assert [i["request_id"] for i in worklist["items"]] == [view["id"]]
        await act(client, "county_reader", view["id"], "claim")
        assert (await recv(reader))["name"] == "request.claimed"
        final = await act(
            client,
            "county_reader",
            view["id"],
            "report",
            {
                "findings": "窦性心律，II、III、aVF导联ST段抬高0.3mV。",
                "impression": "急性下壁心肌梗死",
                "critical": True,
                "critical_items": ["急性ST段抬高型心肌梗死"],
                "final": True,
                "structured": {
                    "rhythm": "窦性心律",
                    "rate_bpm": 88,
                    "pr_ms": 160,
                    "qrs_ms": 90,
                    "qt_ms": 380,
                    "qtc_ms": 460,
                    "axis_deg": 60,
                    "conclusion": "急性下壁心肌梗死",
                },
            },
        )
        assert final["state"] == "final"
        critical_id = final["critical_findings"][0]["id"]

        seen = await recv_until(clinic, "request.final")
        assert seen["data"]["request_id"] == view["id"]
        raised = await recv_until(clinic, "critical.raised")
        assert raised["data"]["items"] == ["急性ST段抬高型心肌梗死"]

        client.hub.clock.advance(minutes=16)
        await sweep_once(client.hub)
        escalated = await recv_until(admin, "critical.escalated")
        assert escalated["data"]["level"] == 1 and escalated["data"]["critical_id"] == critical_id

        ack = await client.post(
            f"/api/v1/critical/{critical_id}/ack",
            json={"read_back_by": "值班医生", "read_back": "急性ST段抬高型心肌梗死"},
            headers=await client.login("township_doc"),
        )
        assert ack.status == 200
        timeline = (await ack.json())["timeline"]
        assert [t["event"] for t in timeline] == ["critical.raised", "critical.escalated", "critical.acknowledged"]
        assert (await recv_until(clinic, "critical.acknowledged"))["data"]["read_back_by"] == "值班医生"

    request = await (
        await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
    ).json()
    assert request["reports"][0]["structured"]["rate_bpm"] == 88
    assert json.dumps(request, ensure_ascii=False).count("急性下壁心肌梗死") >= 1
