"""The console's main story in two browsers at once: a township doctor orders a chest X-ray with consent,
the study arrives over DICOM from a simulated modality, the county reader's worklist shows it without a
reload, the reader opens it in OHIF, signs a critical report, the doctor sees the report and the critical
banner without a reload and acknowledges with read-back, and the reader's page shows the acknowledgement.
Then the same for an ECG with its 12-lead picture."""

from __future__ import annotations

import re
from typing import Any

import pytest

from telenet.sim.modality import perform_imaging, send_ecg
from tests.browser.conftest import assert_not_reloaded, live, login, mark_no_reload, open_in_ohif, shot
from tests.factories import national_id

pytestmark = pytest.mark.interop

IMG = "NL-C01-K01-IMG"
ECG = "NL-C01-K01-ECG"


def order(page: Any, *, kind: str, modality: str, body_part: str, patient_id: str, name: str, serial: int) -> str:
    """Fill the new-request form as a doctor does; the new request's accession number."""
    from playwright.sync_api import expect

    page.goto("/requests/new")
    page.get_by_label("申请类型").select_option(kind)
    page.get_by_label("检查设备").select_option(modality)
    page.get_by_label("检查部位").fill(body_part)
    page.get_by_label("优先级").select_option("urgent")
    page.get_by_label("临床问题").fill(
        "外伤后胸痛、气促2小时，排除气胸。" if kind == "imaging" else "阵发性胸闷，心悸。"
    )
    page.get_by_label("门诊号/住院号").fill(patient_id)
    page.get_by_label("患者姓名").fill(name)
    page.get_by_label("性别").select_option("M")
    page.get_by_label("出生日期").fill("1968-05-12")
    page.get_by_label("居民身份证号码").fill(national_id(serial))
    page.get_by_label("知情同意签署人").fill(f"{name}本人")
    page.get_by_label("知情同意时间").fill("2026-12-01T08:30")
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/requests/\d+$"))
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text(name)
    match = re.search(r"申请 (\S+) ·", heading.inner_text())
    assert match, heading.inner_text()
    return match.group(1)


def test_xray_story_two_browsers(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    doctor = login(browser, console_hub, "township_doc", capture="login")
    reader = login(browser, console_hub, "county_reader")
    assert "/worklist" in reader.url
    reader.goto(f"/centers/{IMG}/worklist")
    mark_no_reload(reader)
    live(reader)
    shot(reader, "reader-worklist-empty")

    accession = order(
        doctor, kind="imaging", modality="DX", body_part="CHEST", patient_id="T01-8801", name="张三", serial=881
    )
    request_url = doctor.url
    expect(doctor.locator("#request-state")).to_have_text("已申请")
    mark_no_reload(doctor)
    live(doctor)
    shot(doctor, "clinic-request-ordered")

    # The township DR finds the order on its worklist and sends the images (C-STORE + MPPS).
    study_uid = perform_imaging("C01K01T01", "127.0.0.1", console_hub.dicom_port, "TELENET", accession)

    row = reader.get_by_role("row").filter(has=reader.get_by_role("link", name=accession))
    expect(row).to_be_visible(timeout=20_000)
    expect(row).to_contain_text("张三")
    expect(row).to_contain_text("加急")
    assert_not_reloaded(reader)
    shot(reader, "reader-worklist", main=True)
    expect(doctor.locator("#request-state")).to_have_text("待诊断", timeout=20_000)
    assert_not_reloaded(doctor)

    row.get_by_role("button", name=f"认领 {accession}").click()
    reader.wait_for_url(re.compile(r"/requests/\d+$"))
    assert reader.url == request_url
    expect(reader.locator("#held-by")).to_have_text("county_reader")
    viewer_link = reader.get_by_role("link", name="在阅片器中打开")
    expect(viewer_link).to_have_attribute("href", f"/ohif/viewer?StudyInstanceUIDs={study_uid}")
    expect(reader.get_by_role("img", name="DX")).to_have_js_property("complete", True)
    assert reader.evaluate("(img) => img.naturalWidth", reader.get_by_role("img", name="DX").element_handle()) > 0
    viewer = reader.context.new_page()
    open_in_ohif(viewer, study_uid, "张三")
    shot(viewer, "reader-ohif", main=True)
    viewer.close()

    mark_no_reload(reader)
    live(reader)
    reader.get_by_label("常用模板").select_option(label="气胸")
    expect(reader.get_by_label("诊断意见")).to_have_value(re.compile("右侧气胸"))
    reader.get_by_role("checkbox", name="危急值").check()
    reader.get_by_label("危急值内容（每行一项）").fill("右侧气胸，肺组织压缩约40%")
    shot(reader, "reader-report-form", main=True)
    reader.get_by_role("button", name="签发报告").click()
    expect(reader.locator("#request-state")).to_have_text("已签发", timeout=20_000)

    # The doctor's page follows without a reload: the signed report and the critical banner.
    expect(doctor.locator("#request-state")).to_have_text("已签发", timeout=20_000)
    expect(doctor.locator("#req-reports")).to_contain_text("右侧气胸")
    expect(doctor.locator("#critical-banner").get_by_role("alert")).to_contain_text("右侧气胸", timeout=20_000)
    assert_not_reloaded(doctor)
    shot(doctor, "clinic-critical-banner", main=True)

    # The banner is on every page until acknowledged.
    other = doctor.context.new_page()
    other.goto("/requests")
    expect(other.locator("#critical-banner").get_by_role("alert")).to_contain_text("右侧气胸")
    shot(other, "clinic-my-requests", main=True)
    other.close()

    ack = doctor.locator("#req-critical").get_by_role("alert")
    ack.get_by_label("复述人").fill("李青山")
    ack.get_by_label("复述内容").fill("右侧气胸，压缩约40%，已安排转诊")
    ack.get_by_role("button", name="确认危急值").click()
    expect(doctor.locator("#req-critical")).to_contain_text("危急值已确认", timeout=20_000)
    expect(doctor.locator("#critical-banner")).not_to_contain_text("右侧气胸")

    # The reader's page shows the acknowledgement with the read-back, still without a reload.
    expect(reader.locator("#req-critical")).to_contain_text("危急值已确认", timeout=20_000)
    expect(reader.locator("#req-critical")).to_contain_text("已安排转诊")
    assert_not_reloaded(reader)
    shot(reader, "reader-critical-acknowledged")

    # The printable 报告单 carries the signed report.
    doctor.get_by_role("link", name="打印报告单").click()
    expect(doctor.get_by_role("heading", name="远程诊断报告单")).to_be_visible()
    expect(doctor.locator(".report-sheet")).to_contain_text("陈立明")
    doctor.emulate_media(media="print")
    expect(doctor.get_by_text("使用浏览器的打印功能打印本报告单")).to_be_hidden()
    shot(doctor, "clinic-report-sheet", main=True)
    doctor.context.close()
    reader.context.close()


def test_ecg_read_with_twelve_lead_picture(browser: Any, console_hub: Any) -> None:
    from playwright.sync_api import expect

    doctor = login(browser, console_hub, "township_doc")
    accession = order(doctor, kind="ecg", modality="ECG", body_part="", patient_id="T01-8802", name="李四", serial=882)
    send_ecg("C01K01T01", "127.0.0.1", console_hub.dicom_port, "TELENET", accession, "T01-8802", "李^四")

    reader = login(browser, console_hub, "county_reader")
    reader.goto(f"/centers/{ECG}/worklist")
    row = reader.get_by_role("row").filter(has=reader.get_by_role("link", name=accession))
    expect(row).to_be_visible(timeout=20_000)
    row.get_by_role("button", name=f"认领 {accession}").click()
    reader.wait_for_url(re.compile(r"/requests/\d+$"))
    picture = reader.get_by_role("img", name="十二导联心电图 李四")
    expect(picture).to_be_visible(timeout=20_000)
    assert reader.evaluate("(img) => img.naturalWidth", picture.element_handle()) > 500
    expect(reader.locator("figure.ecg figcaption")).to_contain_text("bpm")
    reader.get_by_label("常用模板").select_option(label="窦性心律 正常心电图")
    reader.get_by_label("心律").fill("窦性心律")
    reader.get_by_label("心率 (次/分)").fill("72")
    reader.get_by_label("QTc (ms)").fill("410")
    shot(reader, "reader-ecg", main=True)
    reader.get_by_role("button", name="签发报告").click()
    expect(reader.locator("#request-state")).to_have_text("已签发", timeout=20_000)
    expect(reader.locator("#req-reports")).to_contain_text("rate_bpm: 72")
    doctor.reload()
    expect(doctor.locator("#req-reports")).to_contain_text("正常心电图")
    doctor.context.close()
    reader.context.close()


def test_clinic_without_dicom_network_uploads_over_stow_rs(browser: Any, console_hub: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    from tests.dicom_fixtures import instance, save

    doctor = login(browser, console_hub, "township_doc")
    accession = order(
        doctor, kind="imaging", modality="CT", body_part="HEAD", patient_id="T01-8803", name="吴十", serial=883
    )
    request_url = doctor.url
    study = instance(
        "CT_small.dcm", accession=accession, patient_name="吴^十", patient_id="T01-8803", charset="ISO_IR 192"
    )
    files = [
        save(
            instance(
                "CT_small.dcm",
                study_uid=study.StudyInstanceUID,
                series_uid=study.SeriesInstanceUID,
                accession=accession,
                patient_name="吴^十",
                patient_id="T01-8803",
                charset="ISO_IR 192",
            ),
            tmp_path / f"{i}.dcm",
        )
        for i in range(2)
    ]
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a DICOM file at all")
    doctor.goto("/upload")
    doctor.get_by_label("DICOM 文件").set_input_files([*map(str, files), str(broken)])
    doctor.get_by_role("button", name="上传").click()
    expect(doctor.get_by_role("status").filter(has_text="/ 3")).to_have_text("已上传: 2 / 3", timeout=30_000)
    expect(doctor.locator("#stow-result")).to_contain_text("失败")
    shot(doctor, "clinic-upload", main=True)
    doctor.goto(request_url)
    expect(doctor.get_by_role("link", name="在阅片器中打开")).to_be_visible(timeout=20_000)
    doctor.context.close()


CONSULTANTS = {"NL-C01-CONS": "city_reader", "NL-PROV-CONS": "province_reader"}
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def test_consultation_with_an_attachment_the_consultant_opens(browser: Any, console_hub: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    summary = tmp_path / "出院小结.pdf"
    summary.write_bytes(PDF)
    doctor = login(browser, console_hub, "township_doc")
    doctor.goto("/requests/new")
    doctor.get_by_label("申请类型").select_option("consultation")
    doctor.get_by_label("检查设备").select_option("")
    doctor.get_by_label("检查部位").fill("")
    doctor.get_by_label("临床问题").fill("反复胸闷一月，请上级医院会诊。")
    doctor.get_by_label("期望会诊时间").fill("2026-12-02T10:00")
    doctor.get_by_label("门诊号/住院号").fill("T01-8804")
    doctor.get_by_label("患者姓名").fill("陈十三")
    doctor.get_by_label("居民身份证号码").fill(national_id(884))
    doctor.get_by_label("知情同意签署人").fill("陈十三本人")
    doctor.get_by_label("知情同意时间").fill("2026-12-01T08:30")
    doctor.get_by_label("附件（PDF、JPEG、PNG、DICOM）").set_input_files(str(summary))
    shot(doctor, "clinic-new-consultation", main=True)
    doctor.get_by_role("button", name="提交申请").click()
    doctor.wait_for_url(re.compile(r"/requests/\d+$"))
    expect(doctor.locator("#req-attachments").get_by_role("link", name="出院小结.pdf")).to_be_visible()
    center = re.search(r"\((NL-[A-Z0-9-]+-CONS)\)", doctor.locator("#req-head").inner_text())
    assert center, doctor.locator("#req-head").inner_text()
    request_url = doctor.url

    consultant = login(browser, console_hub, CONSULTANTS[center.group(1)])
    consultant.goto(request_url)
    link = consultant.locator("#req-attachments").get_by_role("link", name="出院小结.pdf")
    expect(link).to_be_visible()
    response = consultant.context.request.get(link.get_attribute("href") or "")
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body() == PDF
    # The consultant center agrees the wished time the clinic proposed: the session is scheduled (会诊已预约).
    session = consultant.locator("#req-consultation")
    expect(session.locator("#consult-phase")).to_have_text("时间待确认")
    session.get_by_role("button", name="确认时间").click()
    expect(consultant.locator("#consult-phase")).to_have_text("已预约")
    shot(consultant, "consultant-request")
    doctor.context.close()
    consultant.context.close()
