"""`eml promote CHECKPOINT`: the nightly run's model, replaced atomically, kept, and recorded in the run catalog."""

from __future__ import annotations

import json

from eml_core.weights import sha256_of
from flows.cli import main
from tasks.runs import read_catalog
from tests.hostile.harness import record, run_cli


def _checkpoint(path, seed: int):
    from eml_core import save_model
    from tests.conftest import tiny_model

    save_model(tiny_model("gap_fc", seed=seed), path)
    return path


def test_promote_sets_current_keeps_history_and_records_it(tmp_path, monkeypatch, capsys):
    first, second = _checkpoint(tmp_path / "ms.pt", 0), _checkpoint(tmp_path / "triplet.pt", 1)
    models, results = tmp_path / "models", tmp_path / "results"
    assert main(["promote", str(first), "--models", str(models), "--results", str(results)]) == 0
    assert (models / "current.pt").read_bytes() == first.read_bytes()
    monkeypatch.setenv("EML_MODELS", str(models))   # the deployment's configuration, as documented
    monkeypatch.setenv("EML_RESULTS", str(results))
    assert main(["promote", str(second)]) == 0
    out = capsys.readouterr().out
    assert f"it replaces {sha256_of(first)[:16]}" in out
    assert sha256_of(models / "current.pt") == sha256_of(second)
    assert {p.name for p in (models / "promoted").iterdir()} == {f"{sha256_of(c)[:16]}.pt" for c in (first, second)}
    catalog = read_catalog(str(results))
    assert list(catalog["kind"]) == ["promotion", "promotion"]
    assert list(catalog["checkpoint_sha256"]) == [sha256_of(first), sha256_of(second)]
    manifest = json.loads(next((results / "promotion").glob(f"{catalog['run_id'].iloc[1]}/manifest.json"))
                          .read_text())
    assert manifest["previous_sha256"] == sha256_of(first) and manifest["checkpoint"]["source"] == str(second)
    # the nightly run reads <models>/current.pt: its catalog row then names the promoted checkpoint's hash
    from tasks.provenance import model_fingerprint

    assert model_fingerprint(str(models / "current.pt")) == sha256_of(second)


def test_promote_refuses_what_is_not_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("EML_MODELS", raising=False)
    monkeypatch.delenv("EML_RESULTS", raising=False)
    fake = tmp_path / "evil.pt"
    fake.write_bytes(b"\x80\x04not a checkpoint at all")
    good = _checkpoint(tmp_path / "good.pt", 0)
    models, results = str(tmp_path / "models"), str(tmp_path / "results")
    cases = [(["promote", str(fake), "--models", models, "--results", results], "not a checkpoint", None),
             (["promote", str(tmp_path / "missing.pt"), "--models", models, "--results", results], "missing file",
              "no such checkpoint file"),
             (["promote", str(good), "--results", results], "no models folder", "EML_MODELS is not set"),
             (["promote", str(good), "--models", models], "no results root", "EML_RESULTS is not set"),
             (["promote", str(good), "--models", str(good), "--results", results], "models is a file",
              "exists and is not a folder"),
             (["promote", str(good), "--models", models, "--results", "ftp://host/x"], "results not a location",
              "only local folders and s3://")]
    for argv, case, expected in cases:
        result = run_cli(argv, entry_point="eml promote", case=case)
        if expected:
            assert expected in result.err, (case, result.err)
    assert not (tmp_path / "models" / "current.pt").exists()  # nothing was promoted by any of them
    record("eml promote", "all refusals left current.pt untouched", "handled")
