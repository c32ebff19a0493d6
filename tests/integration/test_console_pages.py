"""Each role's screens render from the same services as the API, and a role does not see another's screens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import order
from tests.integration.test_console_sessions import session_of

pytestmark = pytest.mark.storage

SCREENS = {
    "township_doc": ["/requests", "/requests/new", "/upload"],
    "county_reader": ["/centers/NL-C01-K01-IMG/worklist", "/centers/NL-C01-K01-ECG/worklist"],
    "county_coord": ["/centers/NL-C01-K01-IMG/board"],
    "county_admin": [
        "/admin/registry",
        "/admin/assessment",
        "/admin/settlements?period=2026-03",
        "/admin/audit?action=request.read",
    ],
}


async def page(client: Any, username: str, path: str) -> tuple[int, str]:
    value, _ = await session_of(client, username)
    resp = await client.get(path, headers={"Cookie": f"telenet_session={value}"}, allow_redirects=False)
    return resp.status, await resp.text()


@pytest.mark.parametrize("username", sorted(SCREENS))
async def test_every_screen_of_a_role_renders(client: Any, username: str) -> None:
    headers = await client.login("township_doc")
    made = await client.post("/api/v1/requests", json=order(accession_number="PAGES0001"), headers=headers)
    assert made.status == 201
    for path in SCREENS[username]:
        status, html = await page(client, username, path)
        assert status == 200, f"{username} {path}: {html[:500]}"
        assert '<main id="main">' in html


async def test_home_leads_each_role_to_its_screen(client: Any) -> None:
    expected = {
        "township_doc": "/requests",
        "county_reader": "/centers/NL-C01-K01-IMG/worklist",
        "county_coord": "/centers/NL-C01-K01-IMG/board",
        "province_admin": "/admin/registry",
    }
    for username, target in expected.items():
        value, _ = await session_of(client, username)
        resp = await client.get("/", headers={"Cookie": f"telenet_session={value}"}, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == target


async def test_a_role_cannot_open_another_roles_screens(client: Any) -> None:
    for username, path in [
        ("township_doc", "/admin/registry"),
        ("township_doc", "/centers/NL-C01-K01-IMG/worklist"),
        ("county_reader", "/requests/new"),
        ("county_reader", "/centers/NL-C01-K01-IMG/board"),
        ("county_coord", "/admin/audit"),
        ("city_reader", "/centers/NL-C01-K01-IMG/worklist"),
    ]:
        status, html = await page(client, username, path)
        assert status == 403, f"{username} {path}"
        assert "无法打开此页面" in html


async def test_assessment_charts_are_svg_with_their_csv(client: Any) -> None:
    made = await client.post("/api/v1/requests", json=order(), headers=await client.login("township_doc"))
    assert made.status == 201
    status, html = await page(client, "county_admin", "/admin/assessment")
    assert status == 200
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"') == 5
    value, _ = await session_of(client, "county_admin")
    resp = await client.get("/admin/assessment/kind.csv", headers={"Cookie": f"telenet_session={value}"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    text = await resp.text()
    assert text.startswith("\ufeff申请量（按类型）")
    assert "影像诊断" in text


async def test_registry_tree_has_the_five_tiers_with_centers_and_agreements(client: Any) -> None:
    status, html = await page(client, "province_admin", "/admin/registry")
    assert status == 200
    for tier in ("省级", "市级", "县级", "乡镇", "村级"):
        assert f">{tier}</span>" in html
    assert "安澜县远程影像诊断中心" in html
    assert "生效的协作协议" in html


async def test_the_board_hands_a_claim_to_a_named_reader_and_the_worklist_rows_follow(client: Any) -> None:
    """The coordinator's reassignment form names the center's readers; the console's session hands a claimed
    request to one of them (CSRF required) and releases it; the rows a live worklist reads again
    (``?rows=``) show each reader what is theirs, and only the center's open requests."""
    from tests.integration.test_requests_api import act, queued_imaging

    view = await queued_imaging(client, accession_number="BOARD0001")
    rid, acc = view["id"], view["accession_number"]
    await act(client, "county_reader", rid, "claim")
    status, board = await page(client, "county_coord", "/centers/NL-C01-K01-IMG/board")
    assert status == 200
    dialog = board[board.index('<dialog id="reassign-dialog"') :]
    assert '<label for="f-to">交给医生</label>' in dialog and '<label for="f-reason">分派原因</label>' in dialog
    assert 'value="junior_reader"' in dialog and 'value="county_reader"' in dialog
    assert "city_reader" not in dialog, "only the center's readers"
    assert f'data-reassign="{rid}" data-accession="{acc}" data-holder="county_reader"' in board

    value, csrf = await session_of(client, "county_coord")
    cookie = {"Cookie": f"telenet_session={value}"}
    signed = {**cookie, "X-CSRF-Token": csrf}
    url = f"/api/v1/requests/{rid}/reassign"
    refused = await client.post(url, json={"to": "junior_reader", "reason": "会诊"}, headers=cookie)
    assert refused.status == 403 and (await refused.json())["type"].endswith(":csrf")
    stranger = await client.post(url, json={"to": "city_reader", "reason": "会诊"}, headers=signed)
    assert stranger.status == 422 and (await stranger.json())["type"].endswith(":unknown-reader")
    handed = await client.post(url, json={"to": "junior_reader", "reason": "会诊"}, headers=signed)
    assert handed.status == 200 and (await handed.json())["claimed_by"] == "junior_reader"

    rows = f"/centers/NL-C01-K01-IMG/worklist?rows={rid},999999"
    status, theirs = await page(client, "junior_reader", rows)
    assert status == 200 and "<html" not in theirs and theirs.count("<tr ") == 1
    assert '<td class="holder">junior_reader</td>' in theirs and f'aria-label="放弃认领 {acc}"' in theirs
    status, previous = await page(client, "county_reader", rows)
    assert status == 200 and '<td class="holder">junior_reader</td>' in previous
    assert "放弃认领" not in previous, "the previous holder may not release it any more"

    released = await client.post(url, json={"to": None, "reason": "重新排队"}, headers=signed)
    assert released.status == 200 and (await released.json())["claimed_by"] is None
    status, queued = await page(client, "junior_reader", rows)
    assert '<td class="holder">未认领</td>' in queued and f'aria-label="认领 {acc}"' in queued

    await act(client, "township_doc", rid, "cancel", {"reason": "患者转院"})
    status, gone = await page(client, "junior_reader", rows)
    assert status == 200 and "<tr " not in gone, "a request no longer open has no row (the page removes it)"
    assert (await page(client, "junior_reader", "/centers/NL-C01-K01-IMG/worklist?rows=abc"))[0] == 422
    assert (await page(client, "city_reader", rows))[0] == 403


async def test_the_board_shows_the_centers_hl7_results_waiting_for_delivery(client: Any) -> None:
    from tests.integration.test_requests_api import FINAL, act, queued_imaging

    view = await queued_imaging(client, accession_number="BOARD0002")
    await act(client, "county_reader", view["id"], "claim")
    await act(client, "county_reader", view["id"], "report", FINAL)
    status, board = await page(client, "county_coord", "/centers/NL-C01-K01-IMG/board")
    assert status == 200
    backlog = board[board.index('<div id="hl7-backlog"') : board.index("</div>", board.index('<div id="hl7-backlog"'))]
    assert f'<a href="/requests/{view["id"]}">BOARD0002</a>' in backlog and "pending" in backlog
    status, other = await page(client, "county_coord", "/centers/NL-C01-K01-ECG/board")
    assert status == 200 and "BOARD0002" not in other, "another center's board does not list it"
