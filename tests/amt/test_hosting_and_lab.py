"""Stimuli on S3 (moto's server on 127.0.0.1) and the local lab mode in a real headless browser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from amt.hosting import upload_stimuli, url_lookup
from amt.ledger import Ledger

CHROMIUM = Path("/usr/bin/chromium")


def test_upload_public_and_presigned(study_copy, s3_endpoint):
    import boto3
    import requests

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="eml-stimuli")
    urls = upload_stimuli(study_copy, s3)
    names = sorted(p.name for p in (study_copy / "stimuli").glob("*.png"))
    assert sorted(urls) == names
    for name, url in urls.items():
        assert url == f"{s3_endpoint}/eml-stimuli/studies/test-overall/{name}"
        assert not re.search("decomposition|gradcam", url)
    first = names[0]
    assert requests.get(urls[first], timeout=10).content == (study_copy / "stimuli" / first).read_bytes()
    assert url_lookup(Ledger.load(study_copy))(first) == urls[first]

    with Ledger.update(study_copy) as ledger:
        ledger.data["study"]["stimuli"]["url_mode"] = "presigned"
    presigned = upload_stimuli(study_copy, s3)
    assert "X-Amz-Signature=" in presigned[first] and "X-Amz-Expires=604800" in presigned[first]
    assert requests.get(presigned[first], timeout=10).status_code == 200


def _browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but /usr/bin/chromium is missing (make test installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


def test_lab_mode_end_to_end_in_a_real_browser(study_copy):
    sync_api = _browser()
    from amt.lab import LabServer

    server = LabServer(study_copy).start()
    try:
        (link,) = server.add_participants(1)
        assert server.address.startswith("http://127.0.0.1:")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(link)
            pages = 0
            while page.locator("#done").count() == 0:
                pages += 1
                questions = page.locator(".item").count()
                assert questions > 0
                # the browser enforces `required`: submitting with an unanswered question stays on the page
                page.click("#submit")
                assert page.locator(".item").count() == questions
                for position in range(questions):
                    page.check(f'input[name="q{position}"][value="1"]')
                images = page.locator("img")
                assert all(images.nth(i).evaluate("img => img.naturalWidth") > 0 for i in range(images.count()))
                page.click("#submit")
                page.wait_for_load_state()
            browser.close()
    finally:
        server.stop()
    ledger = Ledger.load(study_copy)
    assert pages == len(ledger.hits)
    responses = pd.read_parquet(study_copy / "responses.parquet")
    assert len(responses) == len(ledger.items) and set(responses["source"]) == {"lab"}
    assert set(responses["item_id"]) == {i["item_id"] for i in ledger.items}
    assert (responses["score_a"] == 1).all() and responses["worker_hash"].nunique() == 1
    token = link.rsplit("/", 1)[1]
    assert not responses.astype(str).apply(lambda col: col.str.contains(token)).any().any()


def test_lab_server_refuses_unknown_links_and_files(study_copy):
    import requests

    from amt.lab import LabServer

    server = LabServer(study_copy).start()
    try:
        assert requests.get(f"{server.address}/p/not-a-valid-token-123", timeout=10).status_code == 403
        assert requests.get(f"{server.address}/ledger.json", timeout=10).status_code == 403
        assert requests.get(f"{server.address}/stimuli/../ledger.json", timeout=10).status_code in (403, 404)
        (link,) = server.add_participants(1)
        response = requests.post(f"{link}/hit/0", data={"q0": "7"}, allow_redirects=False, timeout=10)
        assert response.status_code == 303  # malformed answers are not stored; the page comes back
        assert not (study_copy / "responses.parquet").exists()
    finally:
        server.stop()
