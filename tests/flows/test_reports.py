"""What runs publish to Prefect: scoped keys in Prefect's alphabet, figures inside the markdown, links only where
a browser can open them, and the note where two methods coincide by construction."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pandas as pd

from eml_core.stored_maps import encode
from tasks.reports import (
    KEY_LENGTH,
    artifact_key,
    coincidence_notes,
    coinciding_methods,
    dataset_scope,
    openable_link,
    png_data_uri,
)

PREFECT_KEY = re.compile(r"^[a-z0-9-]+$")


def test_keys_are_scoped_by_kind_deployment_dataset_and_study():
    nightly = artifact_key("localization", "report", "nightly-localization", dataset_scope("cub:/data/CUB_200_2011"))
    adhoc = artifact_key("localization", "report", "adhoc", dataset_scope("synthetic"))
    other = artifact_key("localization", "report", "adhoc", dataset_scope("folder:/srv/Birds Extra,labels.csv"))
    study = artifact_key("study", "report", "Pilot_Study 2")
    assert nightly == "localization-nightly-localization-cub-cub-200-2011-report"
    assert adhoc == "localization-adhoc-synthetic-report" and other == "localization-adhoc-folder-birds-extra-report"
    assert study == "study-pilot-study-2-report"
    long = artifact_key("localization", "report", "adhoc", "x" * 200)
    long_other = artifact_key("localization", "report", "adhoc", "x" * 199 + "y")
    for key in (nightly, adhoc, other, study, long, long_other):
        assert PREFECT_KEY.match(key) and len(key) <= KEY_LENGTH and "--" not in key
    assert long != long_other and long.endswith("-report")  # cut, but still told apart by a hash


def test_figures_become_small_data_uris():
    big = np.zeros((900, 1800, 3), np.uint8)
    cv2.rectangle(big, (100, 100), (1700, 800), (0, 200, 255), -1)
    uri = png_data_uri(cv2.imencode(".png", big)[1].tobytes())
    assert uri.startswith("data:image/png;base64,")
    small = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (240, 480, 3) and len(uri) < 20_000


def test_links_only_where_a_browser_can_open_them(monkeypatch):
    for variable in ("EML_DASHBOARD_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    assert openable_link("/srv/results/localization/r1", "localization", run="r1") is None
    assert openable_link("s3://bucket/nightly/localization/r1", "localization", run="r1") == (
        "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=nightly%2Flocalization%2Fr1%2F")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")  # another S3: no console page for it
    assert openable_link("s3://bucket/r1", "localization", run="r1") is None
    monkeypatch.setenv("EML_DASHBOARD_URL", "http://reviews.lab:8501/")
    assert openable_link("/srv/results/r1", "localization", run="r1") == "http://reviews.lab:8501/localization?run=r1"
    monkeypatch.setenv("EML_DASHBOARD_URL", "/not/a/url")
    assert openable_link("/srv/results/r1", "localization", run="r1") is None


def test_methods_equal_up_to_a_positive_factor_are_noted():
    rng = np.random.default_rng(0)
    rows = []
    for pair in range(5):
        base = rng.normal(size=(7, 7)).astype(np.float32)
        for method, raw in (("decomposition_bias", base), ("gradcam_nonorm", 37.5 * base),
                            ("gradcam", rng.normal(size=(7, 7)).astype(np.float32))):
            rows.append({"pair_id": f"p{pair}", "image_id": str(pair), "side": "query", "method": method,
                         "image_height": 64, "image_width": 64, **encode(raw)})
    pairs = coinciding_methods(pd.DataFrame(rows))
    assert pairs == [("decomposition_bias", "gradcam_nonorm")]
    (note,) = coincidence_notes(pairs)
    assert "proportional to Decomposition+Bias by construction" in note and "GAP head" in note
    assert coinciding_methods(pd.DataFrame(rows[:-1] + [{**rows[-1], "method": "gradcam_nonorm",
                                                         **encode(-np.ones((7, 7)))}])) == []
