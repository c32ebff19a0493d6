"""The live channel as a person sees it: when the connection drops the page says it is reconnecting, and once
back it subscribes with ``since`` so what happened meanwhile is replayed and shown without a reload. And the
coordinator's board hands a claim to a named reader and releases one, live on every open page; the
administrator's screens, captured."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.browser.conftest import UNLABELLED, api, assert_not_reloaded, live, login, mark_no_reload, queued_xray, shot

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


def test_coordinator_reassigns_releases_and_links_a_study(browser: Any, console_hub: Any) -> None:
    """The board's 分派: the coordinator hands county_reader's claim to junior_reader (the reason is required,
    its error beside the field), both readers' open worklists follow without reload (the new holder may release
    it, the previous one no longer), then the coordinator releases the claim back to the queue. And an
    unmatched study is linked: the patients differ, so the hub's warning asks for a confirmation first."""
    from playwright.sync_api import expect

    from telenet.sim.modality import send_ecg
    from tests.browser.test_access import wait_queued

    view, _ = queued_xray(console_hub, name="冯十二", serial=962)
    send_ecg("C01K01T01", "127.0.0.1", console_hub.dicom_port, "TELENET", "UNMATCHED962", "X-962", "王^某")
    wait_queued(console_hub, view["id"])
    for _ in range(100):
        unmatched = api(console_hub, "county_coord", "GET", "/api/v1/reconciliation")["items"]
        if any(s["accession_number"] == "UNMATCHED962" for s in unmatched):
            break
        time.sleep(0.2)
    api(console_hub, "county_reader", "POST", f"/api/v1/requests/{view['id']}/claim")
    acc = view["accession_number"]
    previous = login(browser, console_hub, "county_reader")
    named = login(browser, console_hub, "junior_reader")
    coordinator = login(browser, console_hub, "county_coord")
    assert coordinator.url.endswith(f"/centers/{IMG}/board")
    for reader in (previous, named):
        reader.goto(f"/centers/{IMG}/worklist")
    for each in (previous, named, coordinator):
        live(each)
        mark_no_reload(each)

    def row(page: Any) -> Any:
        return page.locator(f'tr[data-request="{view["id"]}"]')

    expect(row(previous).get_by_role("button", name=f"放弃认领 {acc}")).to_be_visible()
    expect(row(named).locator("td.holder")).to_have_text("county_reader")
    expect(row(named).get_by_role("button")).to_have_count(0)
    expect(coordinator.get_by_role("heading", name=f"中心看板 · {IMG}")).to_be_visible()
    expect(coordinator.get_by_role("heading", name="待匹配影像")).to_be_visible()

    claims = re.search(r"junior_reader: (\d+)", coordinator.locator("#board-claims").inner_text())
    held = int(claims.group(1)) if claims else 0  # other tests' claims on the same hub
    coordinator.get_by_role("button", name=f"分派 {acc}").click()
    dialog = coordinator.get_by_role("dialog")
    expect(dialog).to_contain_text(acc)
    assert coordinator.evaluate(UNLABELLED) == []
    dialog.get_by_label("交给医生").select_option("junior_reader")
    dialog.get_by_role("button", name="交给该医生").click()
    expect(dialog.locator("#f-reason-error")).to_contain_text("reason")  # the service's problem JSON, beside it
    dialog.get_by_label("分派原因").fill("陈医生外出会诊，转交赵医生")
    shot(coordinator, "coordinator-reassign", main=True)
    dialog.get_by_role("button", name="交给该医生").click()
    expect(dialog).to_be_hidden()
    expect(row(coordinator).locator("td.holder")).to_have_text("junior_reader")
    expect(coordinator.locator("#board-claims")).to_contain_text(f"junior_reader: {held + 1}")
    expect(row(named).get_by_role("button", name=f"放弃认领 {acc}")).to_be_visible()  # theirs now
    expect(row(previous).locator("td.holder")).to_have_text("junior_reader")
    expect(row(previous).get_by_role("button")).to_have_count(0)  # the previous holder lost it

    coordinator.get_by_role("button", name=f"分派 {acc}").click()
    dialog.get_by_label("分派原因").fill("退回队列重新认领")
    dialog.get_by_role("button", name="收回认领（放回队列）").click()
    expect(dialog).to_be_hidden()
    expect(row(named).get_by_role("button", name=f"认领 {acc}")).to_be_visible()
    expect(row(previous).locator("td.holder")).to_have_text("未认领")
    expect(row(coordinator).locator("td.holder")).to_have_text("未认领")
    shot(coordinator, "coordinator-board", main=True)

    card = coordinator.locator("#reconciliation article", has_text="UNMATCHED962")
    card.get_by_label("关联到申请编号").fill(str(view["id"]))
    card.get_by_role("button", name="关联", exact=True).click()
    expect(card.locator('.field-error[data-pointer="/confirm_reason"]')).to_contain_text("患者不一致")
    shot(coordinator, "coordinator-reconciliation-mismatch")
    card.get_by_label(re.compile("^确认理由")).fill("同一患者，设备登记的姓名有误")
    card.get_by_role("button", name="关联", exact=True).click()
    expect(coordinator.locator("#reconciliation")).not_to_contain_text("UNMATCHED962")
    for each in (previous, named, coordinator):
        assert_not_reloaded(each)
        each.context.close()


def test_admin_screens(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    api(console_hub, "county_coord", "GET", f"/api/v1/centers/{IMG}/worklist")  # what the audit search finds
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
    assert admin.evaluate(UNLABELLED) == []
    admin.get_by_role("link", name="审计查询").click()
    admin.get_by_label("操作", exact=True).fill("worklist.read")
    admin.get_by_role("button", name="查询").click()
    expect(admin.get_by_role("cell", name="worklist.read").first).to_be_visible()
    expect(admin.get_by_role("cell", name="county_coord").first).to_be_visible()
    shot(admin, "admin-audit", main=True)
    assert admin.evaluate(UNLABELLED) == []
    admin.context.close()
