"""What each person may do on the console: a junior reader has no sign button, a clinic cannot open another
clinic's request (403 page, audited), the worklist works with the keyboard alone, every control is labelled,
and form errors from the service's problem JSON are shown next to their fields with nothing half-saved."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import UNLABELLED, api, login, queued_xray, require_viewer, shot
from tests.factories import national_id

pytestmark = pytest.mark.interop

IMG = "NL-C01-K01-IMG"


def wait_queued(console_hub: Any, request_id: int) -> None:
    for _ in range(100):
        if api(console_hub, "township_doc", "GET", f"/api/v1/requests/{request_id}")["state"] == "queued":
            return
        import time

        time.sleep(0.2)
    raise AssertionError(f"request {request_id} was never queued")


def test_junior_reader_has_no_sign_button(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    view, _ = queued_xray(console_hub, name="王五", serial=901)
    wait_queued(console_hub, view["id"])
    page = login(browser, console_hub, "junior_reader")
    page.goto(f"/requests/{view['id']}")
    page.get_by_role("button", name="认领").click()
    expect(page.get_by_role("button", name="保存初步报告")).to_be_visible(timeout=20_000)
    expect(page.get_by_role("button", name="签发报告")).to_have_count(0)
    expect(page.get_by_role("note")).to_contain_text("执业未满三年")
    assert page.evaluate(UNLABELLED) == []
    shot(page, "reader-junior")
    page.context.close()


def test_other_clinic_gets_a_403_page_and_the_attempt_is_audited(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    view, _ = queued_xray(console_hub, name="赵六", serial=902)
    page = login(browser, console_hub, "township_doc2")
    response = page.goto(f"/requests/{view['id']}")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("您无权查看此内容")
    expect(page.locator("main")).not_to_contain_text("赵六")
    shot(page, "clinic-forbidden")
    page.context.close()
    audit = api(console_hub, "province_admin", "GET", "/api/v1/audit?action=request.read&limit=50")
    refused = [e for e in audit["items"] if e["actor"] == "township_doc2" and e["object_id"] == str(view["id"])]
    assert refused and refused[0]["outcome"] != "ok", audit["items"][:3]


def test_worklist_with_the_keyboard_alone(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    view, _ = queued_xray(console_hub, name="钱七", serial=903)
    wait_queued(console_hub, view["id"])
    page = login(browser, console_hub, "county_reader")
    page.goto(f"/centers/{IMG}/worklist")
    assert page.evaluate(UNLABELLED) == []
    target = f"认领 {view['accession_number']}"
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == target:
            break
    else:
        raise AssertionError("the claim button is not reachable with Tab")
    shot(page, "reader-worklist-keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/requests/{view['id']}$"))
    expect(page.locator("#held-by")).to_have_text("county_reader")
    assert page.evaluate(UNLABELLED) == []
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "放弃认领":
            break
    else:
        raise AssertionError("the release button is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#request-state")).to_have_text("待诊断", timeout=20_000)
    page.context.close()


def _count(page: Any) -> int:
    resp = page.context.request.get("/api/v1/requests?limit=500")
    assert resp.ok, resp.text()
    return len(resp.json()["items"])


def test_form_errors_next_to_fields_nothing_half_saved_one_request_per_double_click(
    browser: Any, console_hub: Any
) -> None:
    from playwright.sync_api import expect

    page = login(browser, console_hub, "township_doc3")
    before = _count(page)
    page.goto("/requests/new")
    assert page.evaluate(UNLABELLED) == []
    submit = page.get_by_role("button", name="提交申请")
    submit.click()
    # Schema errors from the service, each beside its field.
    expect(page.locator("#f-clinical_question-error")).to_contain_text("clinical_question")
    expect(page.locator("#f-patient-name-error")).to_contain_text("name")
    expect(page.get_by_label("临床问题")).to_have_attribute("aria-invalid", "true")
    shot(page, "clinic-form-errors", main=True)

    page.get_by_label("临床问题").fill("腹痛待查。")
    page.get_by_label("门诊号/住院号").fill("T3-1")
    page.get_by_label("患者姓名").fill("孙八")
    page.get_by_label("居民身份证号码").fill("450102198001010010")
    page.get_by_label("知情同意签署人").fill("孙八本人")
    page.get_by_label("知情同意时间").fill("2026-12-01T08:00")
    submit.click()
    expect(page.locator("#f-patient-national_id-error")).to_contain_text("check digit")
    expect(page.locator("#f-clinical_question-error")).to_be_empty()

    page.get_by_label("居民身份证号码").fill(national_id(904))
    page.get_by_label("知情同意签署人").fill("")
    page.get_by_label("知情同意时间").fill("")
    submit.click()
    expect(page.locator("#f-consent-given_by-error")).to_contain_text("知情同意")
    assert _count(page) == before  # nothing half-saved: no request from any refused attempt

    page.get_by_label("知情同意签署人").fill("孙八本人")
    page.get_by_label("知情同意时间").fill("2026-12-01T08:00")
    submit.dblclick()
    page.wait_for_url(re.compile(r"/requests/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("孙八")
    assert _count(page) == before + 1
    page.context.close()


def test_another_township_opening_the_viewer_address_sees_nothing(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    require_viewer()
    _, study_uid = queued_xray(console_hub, name="周九", serial=951)
    other = login(browser, console_hub, "township_doc2")
    other.goto(f"/ohif/viewer?StudyInstanceUIDs={study_uid}")
    expect(other.get_by_text("not available")).to_be_visible(timeout=60_000)
    shot(other, "other-clinic-ohif")
    assert "周九" not in other.locator("body").inner_text()
    assert other.locator("canvas.cornerstone-canvas").count() == 0
    other.context.close()


def test_return_resubmit_sign_and_addendum(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    view, _ = queued_xray(console_hub, name="褚十四", serial=905)
    wait_queued(console_hub, view["id"])
    reader = login(browser, console_hub, "county_reader")
    reader.goto(f"/requests/{view['id']}")
    reader.get_by_role("button", name="认领").click()
    reader.get_by_label("退回原因").select_option(label="图像质量不合格")
    reader.get_by_label("说明").fill("图像模糊，请重新拍摄")
    reader.get_by_role("button", name="退回").click()
    expect(reader.locator("#request-state")).to_have_text("已退回", timeout=20_000)

    doctor = login(browser, console_hub, "township_doc")
    doctor.goto(f"/requests/{view['id']}")
    expect(doctor.locator("#req-head")).to_contain_text("图像质量不合格")
    doctor.get_by_label("说明").fill("已重新拍摄")
    doctor.get_by_role("button", name="重新提交").click()
    expect(doctor.locator("#request-state")).not_to_have_text("已退回", timeout=20_000)

    # The reader's open page follows; once queued again it is claimed, signed and completed by an addendum.
    expect(reader.get_by_role("button", name="认领")).to_be_visible(timeout=30_000)
    reader.get_by_role("button", name="认领").click()
    reader.get_by_label("检查所见").fill("重新拍摄的胸片：两肺纹理清晰。")
    reader.get_by_label("诊断意见").fill("两肺未见明显异常。")
    reader.get_by_role("button", name="签发报告").click()
    expect(reader.locator("#request-state")).to_have_text("已签发", timeout=20_000)
    reader.get_by_label("补充内容").fill("补充：左侧第5肋骨陈旧性骨折。")
    reader.get_by_role("button", name="添加补充报告").click()
    expect(doctor.locator("#req-reports")).to_contain_text("陈旧性骨折", timeout=20_000)
    shot(doctor, "clinic-addendum")
    reader.context.close()
    doctor.context.close()
