"""The live channel as a person sees it: when the connection drops the page says it is reconnecting, and once
back it subscribes with ``since`` so what happened meanwhile is replayed and shown without a reload. And the
coordinator's and administrator's screens, captured."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import assert_not_reloaded, live, login, mark_no_reload, queued_xray, shot

pytestmark = pytest.mark.interop

IMG = "NL-C01-K01-IMG"


def test_dropped_connection_shows_reconnecting_and_replays_since(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    state: dict[str, Any] = {"down": False, "sockets": [], "subscribes": [], "events": []}

    def route(ws: Any) -> None:
        if state["down"]:
            ws.close(code=1013, reason="hub unreachable")
            return
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            state["subscribes"].append(json.loads(message))
            server.send(message)

        def to_page(message: str | bytes) -> None:
            state["events"].append(json.loads(message))
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)
        state["sockets"].append(ws)

    page = login(browser, console_hub, "county_reader")
    page.route_web_socket("**/api/v1/ws", route)
    page.goto(f"/centers/{IMG}/worklist")
    live(page)
    mark_no_reload(page)
    first_since = state["subscribes"][0]["since"]

    state["down"] = True
    state["sockets"][0].close(code=1012, reason="hub restarting")
    status = page.locator("#live-status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_have_text("连接中断，正在重新连接…")
    shot(page, "reader-reconnecting")

    view, _ = queued_xray(console_hub, name="郑十一", serial=961)  # happens while the page is cut off
    state["down"] = False
    expect(status).to_have_attribute("data-state", "open", timeout=20_000)
    resumed = state["subscribes"][-1]
    assert resumed["since"] >= first_since
    replayed = [e for e in state["events"] if e.get("type") == "event" and e["data"].get("request_id") == view["id"]]
    assert replayed, "the events of the time offline were not replayed"
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=view["accession_number"]))
    expect(row).to_be_visible(timeout=20_000)
    assert_not_reloaded(page)
    page.context.close()


def test_coordinator_board_and_admin_screens(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    queued_xray(console_hub, name="冯十二", serial=962)
    coordinator = login(browser, console_hub, "county_coord")
    assert coordinator.url.endswith(f"/centers/{IMG}/board")
    expect(coordinator.get_by_role("heading", name=f"中心看板 · {IMG}")).to_be_visible()
    expect(coordinator.locator("#board")).to_contain_text("冯十二", timeout=20_000)
    expect(coordinator.get_by_role("heading", name="待匹配影像")).to_be_visible()
    shot(coordinator, "coordinator-board", main=True)
    coordinator.context.close()

    admin = login(browser, console_hub, "province_admin")
    expect(admin.get_by_role("heading", name="五级机构目录")).to_be_visible()
    expect(admin.get_by_text("安澜县清溪镇上坪村卫生室")).to_be_visible()
    shot(admin, "admin-registry", main=True)
    admin.get_by_role("link", name="考核统计").click()
    expect(admin.get_by_role("img", name="申请量（按类型）")).to_be_visible(timeout=30_000)
    expect(admin.get_by_role("img", name="各周时限达标率")).to_be_visible()
    shot(admin, "admin-assessment", main=True)
    with admin.expect_download() as download:
        admin.get_by_role("link", name="下载CSV: 申请量（按类型）").click()
    assert download.value.suggested_filename == "kind.csv"
    admin.get_by_role("link", name="费用结算").click()
    expect(admin.get_by_role("heading", name="月度费用结算", exact=False)).to_be_visible()
    shot(admin, "admin-settlements")
    admin.get_by_role("link", name="审计查询").click()
    admin.get_by_label("操作", exact=True).fill("worklist.read")
    admin.get_by_role("button", name="查询").click()
    expect(admin.get_by_role("cell", name="worklist.read").first).to_be_visible()
    expect(admin.get_by_role("cell", name="county_coord").first).to_be_visible()
    shot(admin, "admin-audit", main=True)
    admin.context.close()
