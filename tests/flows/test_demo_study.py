"""`eml demo --out X` builds its example study from X's localization run, whatever the working directory
(issue 7, item 7: it used to read out/demo/... relative to the working directory)."""

from __future__ import annotations

import json

import pandas as pd

from amt.ledger import Ledger


def test_demo_study_builds_from_the_runs_under_its_own_out(tiny_synthetic, tiny_synthetic_root, tmp_path, monkeypatch):
    from tasks.demo import DEMO_STUDY
    from tasks.studies import build

    out = tmp_path / "elsewhere" / "X"
    run = out / "localization"
    run.mkdir(parents=True)
    rows = [{"pair_id": f"{a.image_id}-{b.image_id}", "image_id": a.image_id, "partner_id": b.image_id, "side": "query"}
            for a in tiny_synthetic.items for b in tiny_synthetic.items
            if a.label == b.label and a is not b]
    pd.DataFrame(rows).to_parquet(run / "localization_items.parquet")
    (run / "manifest.json").write_text(json.dumps({"config": {"dataset": f"cub:{tiny_synthetic_root}"},
                                                   "checkpoint": {"spec": "tests.conftest:tiny"}}))
    monkeypatch.chdir(tmp_path)  # no out/demo here: the build must not look for one
    study = build.fn(str(DEMO_STUDY), str(out / "study"), source=str(out / "localization"))  # as flows/demo.py
    ledger = Ledger.load(out / "study")
    assert ledger.data["study"]["source"] == str(run)
    assert study["items"] == len(ledger.items) == 24  # 20 items + 20% catch trials, as the demo definition says
    assert DEMO_STUDY.is_file() and not (tmp_path / "out").exists()
