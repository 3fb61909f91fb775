"""A real ``eml dashboard`` on a demo results root, in Debian's headless chromium (playwright; no browser is ever
downloaded): the runs page, a gallery filter, the study review page; then SIGTERM stops it cleanly.

With ``EML_UPDATE_SCREENSHOT=1`` the gallery screenshot is also saved as docs/images/dashboard.png.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amt.ledger import Ledger

CHROMIUM = Path("/usr/bin/chromium")
EML = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]  # what .venv/bin/eml runs
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"
IDLE = """() => document.querySelector('[data-testid="stApp"]')
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-testid="stSkeleton"]')"""
IMAGES = """document.querySelectorAll('[data-testid="stImage"]').length"""


def _browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but /usr/bin/chromium is missing (make test installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_health(port: int, process: subprocess.Popen, seconds: float = 90) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"eml dashboard exited: {process.communicate()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError("the dashboard never answered")


def _small_png(png: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_the_dashboard_in_a_real_browser(demo, study_copy_of_demo, tmp_path):
    sync_api = _browser()
    port = _free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull,
                       AWS_EC2_METADATA_DISABLED="true")  # an approval must fail here, in one line, reaching nothing
    process = subprocess.Popen([*EML, "dashboard", "--results", demo["root"], "--study",
                                str(study_copy_of_demo), "--port", str(port)], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_health(port, process)
        first, second = (row["run_id"] for row in demo["localization"])
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("Compare two runs").wait_for(timeout=90_000)
            page.wait_for_function(IDLE, timeout=60_000)
            assert page.get_by_text("5 of 5 runs shown").count() == 1
            assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # the catalog and the comparison
            page.get_by_test_id("stMultiSelect").filter(has_text="kind").click()
            page.get_by_role("option", name="localization", exact=True).click()
            page.get_by_text("2 of 5 runs shown").wait_for(timeout=60_000)

            page.goto(f"http://127.0.0.1:{port}/localization?run={first}")
            page.get_by_text("Table II: best accuracy per method").wait_for(timeout=60_000)
            page.get_by_text("Gallery", exact=True).click()
            page.get_by_text("of 24 images").first.wait_for(timeout=60_000)
            # the page's status widget shows only after a moment's run: wait for the drawn page, not for idleness
            page.wait_for_function(f"() => {IMAGES} === 12", timeout=60_000)  # one page of the gallery
            page.wait_for_function(IDLE, timeout=60_000)
            assert page.locator('[data-testid="stImage"]').count() == 12
            screenshot = page.screenshot()
            page.get_by_test_id("stSelectbox").filter(has_text="class").click()
            page.get_by_role("option", name="2", exact=True).click()
            page.get_by_text("8 of 24 images").wait_for(timeout=60_000)  # 24 items, 16 images: classes 1-2 twice
            page.wait_for_function(f"() => {IMAGES} === 8", timeout=60_000)  # the other classes' images gone

            page.goto(f"http://127.0.0.1:{port}/review")
            page.get_by_text("2 assignments held for review.").wait_for(timeout=60_000)
            page.wait_for_function(IDLE, timeout=60_000)
            page.wait_for_function(f"() => {IMAGES} === 20", timeout=60_000)  # both robots beside every answer
            page.get_by_role("button", name="Approve").first.click()
            page.get_by_text("no AWS credentials found").wait_for(timeout=60_000)
            browser.close()
        assert len(Ledger.load(study_copy_of_demo).data["review"]) == 2  # nothing approved, nothing sent
        (tmp_path / "dashboard.png").write_bytes(screenshot)
        if os.environ.get("EML_UPDATE_SCREENSHOT") == "1":
            DOCS_IMAGE.parent.mkdir(exist_ok=True)
            DOCS_IMAGE.write_bytes(_small_png(screenshot))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "dashboard stopped" in out
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
