"""Browser tests: Playwright for Python driving Debian's chromium (never a downloaded browser) against a real
hub process (``telenet serve`` with the DICOM node), one browser and one hub per module."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest

from bench.common import PASSWORD, HubProcess
from tests.conftest import ROOT, missing_peer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
VIEWER_DIST = Path(os.environ.get("TELENET_VIEWER_DIR") or ROOT / "var" / "viewer" / "dist")
SHOTS = Path(os.environ.get("TELENET_SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
DOCS_SHOTS = ROOT / "docs" / "screenshots"
# The main screens are copied into docs/screenshots (shown by the README) when this is set.
UPDATE_DOCS = os.environ.get("TELENET_UPDATE_SCREENSHOTS") == "1"


# Form controls without an accessible name (no label, aria-label or aria-labelledby; a button without text).
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter((el) => {
    const named = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || (el.labels && el.labels.length);
    const text = (el.tagName === 'BUTTON') && el.textContent.trim();
    return !named && !text;
  })
  .map((el) => el.outerHTML)"""


def _missing(what: str) -> NoReturn:
    missing_peer(f"{what}; TELENET_REQUIRE_PEERS=1 fails here")


def require_viewer() -> Path:
    if not (VIEWER_DIST / "index.html").is_file():
        _missing(f"the OHIF viewer is not installed in {VIEWER_DIST} (make viewer)")
    return VIEWER_DIST


@pytest.fixture(scope="module")
def browser(console_hub: HubProcess) -> Iterator[Any]:
    """One chromium per module, closed before its hub stops (open WebSockets would hold the hub's shutdown)."""
    if not Path(CHROMIUM).is_file():
        _missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def console_hub() -> Iterator[HubProcess]:
    """One hub for the browser tests (each test makes its own requests), with the DICOM node, a short study
    quiet time and the viewer when installed."""
    env = {
        "TELENET_STUDY_QUIET_SECONDS": "1",
        "TELENET_SWEEP_INTERVAL_SECONDS": "1",
        # Every browser test logs the same demo accounts in; the login limiter has its own tests.
        "TELENET_LOGIN_ATTEMPTS_PER_ACCOUNT_MINUTE": "10000",
        "TELENET_LOGIN_ATTEMPTS_PER_ADDRESS_MINUTE": "10000",
    }
    if (VIEWER_DIST / "index.html").is_file():
        env["TELENET_VIEWER_DIR"] = str(VIEWER_DIST)
    process = HubProcess(protocols=True, env_extra=env)
    # On a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(process.prepare).result()
        pool.submit(process.set_all_passwords).result()
    process.start()
    yield process
    try:
        process.stop()
    except subprocess.TimeoutExpired:
        assert process.proc is not None
        process.proc.kill()
    log = process.log.read_text(errors="replace") if process.log.exists() else ""
    if "Traceback" in log:
        print(f"hub log with errors:\n{log[-6000:]}")
    shutil.rmtree(process.tmp, ignore_errors=True)


def login(
    browser: Any, console_hub: HubProcess, username: str, *, locale: str = "zh-CN", capture: str | None = None
) -> Any:
    """A new browser context (its own cookies) logged in as ``username`` through the login form; its page."""
    context = browser.new_context(viewport=VIEWPORT, locale=locale, base_url=console_hub.url)
    page = context.new_page()
    page.goto("/login")
    label = {"zh-CN": ("用户名", "密码", "登录"), "en": ("Username", "Password", "Log in")}[locale]
    page.get_by_label(label[0]).fill(username)
    page.get_by_label(label[1]).fill(PASSWORD)
    if capture:
        shot(page, capture, main=True)
        assert page.evaluate(UNLABELLED) == []
    page.get_by_role("button", name=label[2], exact=True).click()
    page.wait_for_url(lambda url: "/login" not in url)
    return page


def shot(page: Any, name: str, *, main: bool = False) -> Path:
    """Save a PNG of the page; a main screen also goes to docs/screenshots when TELENET_UPDATE_SCREENSHOTS=1."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 1000
    if main and UPDATE_DOCS:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
    return path


def mark_no_reload(page: Any) -> None:
    """A value that lives only as long as the document: still there later means the page was not reloaded."""
    page.evaluate("window.__telenetNoReload = 4711")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__telenetNoReload") == 4711


def live(page: Any) -> None:
    """Wait until the page's live channel is connected."""
    from playwright.sync_api import expect

    expect(page.locator("#live-status")).to_have_attribute("data-state", "open", timeout=15_000)


def api(console_hub: HubProcess, username: str, method: str, path: str, body: Any = None) -> Any:
    """A REST call with a bearer token (set-up steps that are not what a test shows)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{console_hub.url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {console_hub.token(username)}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def queued_xray(
    console_hub: HubProcess, *, name: str, serial: int, by: str = "township_doc", ae: str = "C01K01T01"
) -> Any:
    """An urgent chest X-ray ordered over REST whose images came over DICOM: (request view, study uid)."""
    from datetime import UTC, datetime

    from telenet.sim.modality import perform_imaging
    from tests.factories import national_id

    view = api(
        console_hub,
        by,
        "POST",
        "/api/v1/requests",
        {
            "kind": "imaging",
            "modality": "DX",
            "body_part": "CHEST",
            "priority": "urgent",
            "clinical_question": "咳嗽、发热3天。",
            "patient": {"id": f"P-{serial}", "name": name, "sex": "F", "national_id": national_id(serial)},
            "consent": {"given_by": f"{name}本人", "given_at": datetime.now(UTC).isoformat()},
        },
    )
    study_uid = perform_imaging(ae, "127.0.0.1", console_hub.dicom_port, "TELENET", view["accession_number"])
    return view, study_uid


def canvas_spread(page: Any) -> float:
    """The standard deviation of the OHIF viewport canvas's grey levels (0 for a blank canvas)."""
    import io

    from PIL import Image, ImageStat

    png = page.locator("canvas.cornerstone-canvas").first.screenshot()
    return float(ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0])


def open_in_ohif(page: Any, study_uid: str, patient_name: str) -> None:
    """The study in OHIF: non-blank pixels in the viewport canvas, and the patient's name in its header."""
    from playwright.sync_api import expect

    require_viewer()
    page.goto(f"/ohif/viewer?StudyInstanceUIDs={study_uid}")
    expect(page.locator("canvas.cornerstone-canvas").first).to_be_visible(timeout=60_000)
    for _ in range(60):
        if canvas_spread(page) > 2.0:
            break
        page.wait_for_timeout(500)
    assert canvas_spread(page) > 2.0
    skip_tour = page.get_by_role("button", name="Skip all")
    if skip_tour.count():
        skip_tour.click()
    page.get_by_text("Patient", exact=True).click()
    expect(page.get_by_text(patient_name).first).to_be_visible(timeout=30_000)
