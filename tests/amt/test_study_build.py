"""Study definitions and `eml study build`: validation, items, randomised sides, blinding, page size."""

from __future__ import annotations

import json
import re

import pytest

from amt.build import build_study
from amt.hit_page import MAX_QUESTION_BYTES, html_question
from amt.ledger import Ledger
from amt.study import StudyError, load_study, study_from_dict
from tests.amt.conftest import write_definition

VALID = dict(study_id="valid-study", kind="overall_map", methods=["decomposition", "gradcam"], source="run", items=4)


@pytest.mark.parametrize("change,field", [
    ({"kind": "rating"}, "kind"),
    ({"methods": ["decomposition"]}, "methods"),
    ({"methods": ["gradcam", "gradcam"]}, "methods"),
    ({"items": 0}, "items"),
    ({"catch_trial_rate": 0.9}, "catch_trial_rate"),
    ({"study_id": "Bad ID!"}, "study_id"),
    ({"reward_usd": "lots"}, "reward_usd"),
    ({"colour": "red"}, "colour"),
    ({"qualifications": {"locales": ["usa"]}}, "qualifications.locales"),
    ({"qualifications": {"approval_rate": 120}}, "qualifications.approval_rate"),
    ({"stimuli": {"url_mode": "ftp"}}, "stimuli.url_mode"),
])
def test_invalid_definitions_name_the_field(change, field):
    with pytest.raises(StudyError, match=re.escape(f"field {field!r}")):
        study_from_dict({**VALID, **change}, "def.yaml")


def test_missing_required_field_and_bad_files(tmp_path):
    incomplete = dict(VALID)
    del incomplete["source"]
    with pytest.raises(StudyError, match="def.yaml: field 'source': is required"):
        study_from_dict(incomplete, "def.yaml")
    with pytest.raises(StudyError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("study_id: [unclosed")
    with pytest.raises(StudyError, match="broken.yaml: not valid YAML"):
        load_study(broken)
    study = study_from_dict({**VALID, "items": 10, "catch_trial_rate": 0.2, "items_per_hit": 4}, "x")
    assert study.catch_items == 2 and study.hits == 3


def test_build_overall_map_study(built_study):
    ledger = Ledger.load(built_study)
    assert len(ledger.items) == 8 + 2 and len(ledger.hits) == 2
    real = [i for i in ledger.items if not i["is_catch"]]
    catch = [i for i in ledger.items if i["is_catch"]]
    assert {i["method_a"] for i in real} == {"decomposition", "gradcam"}  # sides really randomised
    assert all({i["method_a"], i["method_b"]} == {"decomposition", "gradcam"} for i in real)
    assert all(i["expected"] in ("A", "B") and i["method_a"] is None for i in catch)
    for item in ledger.items:
        for name in item["stimuli"].values():
            assert (built_study / "stimuli" / name).is_file()
    assert sorted(p.name for p in (built_study / "hits").iterdir()) == ["hit-000.html", "hit-001.html"]
    assert all(h["unique_request_token"] and h["hit_id"] is None for h in ledger.hits)
    assert len({h["unique_request_token"] for h in ledger.hits}) == 2


def test_build_is_reproducible_from_the_seed(built_study, localization_run, tmp_path):
    study = Ledger.load(built_study).data["study"]
    definition = tmp_path / "again.json"
    definition.write_text(json.dumps({k: v for k, v in study.items() if k != "path"}))
    again = Ledger.load(build_study(load_study(definition), tmp_path / "again").folder)
    first = Ledger.load(built_study)
    assert [(i["item_id"], i["method_a"], i["stimuli"]) for i in again.items] == \
           [(i["item_id"], i["method_a"], i["stimuli"]) for i in first.items]


def test_no_page_url_file_name_or_alt_text_reveals_a_method(built_study):
    ledger = Ledger.load(built_study)
    study = ledger.study_definition()
    secret = re.compile("decomposition|gradcam|grad-cam|grad_cam", re.IGNORECASE)
    pages = [p.read_text() for p in (built_study / "hits").iterdir()]
    for hit in ledger.hits:
        items = ledger.items_of_hit(hit["index"])
        question = html_question(study, items, lambda name: f"https://eml-stimuli.s3.amazonaws.com/studies/x/{name}")
        assert len(question.encode()) < MAX_QUESTION_BYTES
        pages.append(question)
    for page in pages:
        assert not secret.search(page), secret.search(page)
        assert "<!--" not in page
    stimulus_names = [p.name for p in (built_study / "stimuli").iterdir()]
    assert all(re.fullmatch(r"[0-9a-f]{32}\.png", n) for n in stimulus_names)


def test_every_question_has_five_required_answers(built_study):
    """The paper's Fig. 5 wording: "Which robot is more reasonable?" and five "seems ... reasonable" answers."""
    page = (built_study / "hits" / "hit-000.html").read_text()
    questions = page.count('<div class="item">')
    assert questions == 5
    assert page.count('type="radio"') == 5 * questions and page.count("required") == 5 * questions
    assert page.count("Which robot is more reasonable?") == questions + 1  # each item, and the instructions
    for label in ("Robot A seems clearly more reasonable than robot B",
                  "Robot A seems slightly more reasonable than robot B", "Both robots seem equally reasonable",
                  "Robot B seems slightly more reasonable than robot A",
                  "Robot B seems clearly more reasonable than robot A"):
        assert page.count(label) == questions
    assert "top 2% of each robot&#x27;s map" in page


def test_catch_trials_come_from_real_maps_of_the_runs_pairs(built_study, localization_run):
    """Each catch trial names the pair of the run whose real maps it shows (pairs whose maps have too little to
    highlight, or no room off the object, are passed over), each pair at most once."""
    import pandas as pd

    ledger = Ledger.load(built_study)
    catch = [i for i in ledger.items if i["is_catch"]]
    run_pairs = set(pd.read_parquet(localization_run / "localization_items.parquet")["pair_id"])
    sources = [i["source_ref"].split(":", 1)[1] for i in catch]
    assert len(catch) == 2 and all(i["source_ref"].startswith("catch-") for i in catch)
    assert set(sources) <= run_pairs and len(set(sources)) == len(sources)


def test_build_retrieval_study(rankings_table, tmp_path):
    definition = write_definition(tmp_path, study_id="test-retrieval", kind="retrieval",
                                  methods=["partial_similarity", "overall_similarity"], source=str(rankings_table),
                                  items=4, items_per_hit=3, top_k=3, catch_trial_rate=0.25, subject="object")
    ledger = build_study(load_study(definition), tmp_path / "built")
    assert len(ledger.items) == 5 and len(ledger.hits) == 2
    assert sum(i["is_catch"] for i in ledger.items) == 1


def test_build_refuses_bad_sources(rankings_table, tmp_path):
    import pandas as pd

    broken = tmp_path / "broken.parquet"
    pd.read_parquet(rankings_table).drop(columns=["score"]).to_parquet(broken)
    definition = write_definition(tmp_path, study_id="bad-retrieval", kind="retrieval",
                                  methods=["partial_similarity", "overall_similarity"], source=str(broken), items=2,
                                  items_per_hit=2)
    with pytest.raises(StudyError, match="lacks column"):
        build_study(load_study(definition), tmp_path / "out")
    definition = write_definition(tmp_path, study_id="bad-overall", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(tmp_path / "no-run"), items=2,
                                  items_per_hit=2)
    with pytest.raises(StudyError, match="neither a localization run"):
        build_study(load_study(definition), tmp_path / "out2")


def test_build_makes_no_aws_call(localization_run, tmp_path, monkeypatch):
    import boto3

    def forbidden(*args, **kwargs):
        raise AssertionError("build must not create an AWS client")

    monkeypatch.setattr(boto3, "client", forbidden)
    monkeypatch.setattr(boto3, "Session", forbidden)
    definition = write_definition(tmp_path, study_id="offline-build", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(localization_run), items=2,
                                  items_per_hit=2, catch_trial_rate=0.0)
    assert len(build_study(load_study(definition), tmp_path / "out").items) == 2


def test_build_names_run_images_missing_from_the_dataset(localization_run, tmp_path):
    import shutil

    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(localization_run, run)
    items = pd.read_parquet(run / "localization_items.parquet")
    items["partner_id"] = "9999"
    items.to_parquet(run / "localization_items.parquet")
    definition = write_definition(tmp_path, study_id="stale-run", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(run), items=2, items_per_hit=2)
    with pytest.raises(StudyError, match=r"manifest.json: images \['9999'\] of the run are not in dataset"):
        build_study(load_study(definition), tmp_path / "out")


def test_a_study_builds_from_a_localization_run_on_s3(localization_run, s3_endpoint, tmp_path):
    """The run a study reads goes through the results layer, so a run stored on S3 builds like a local one."""
    import boto3

    from amt.build import build_study
    from amt.study import load_study
    from eml_core.results import ResultsLocation
    from tests.amt.conftest import write_definition

    boto3.client("s3").create_bucket(Bucket="eml-runs")
    remote = ResultsLocation("s3://eml-runs/localization/run-1")
    for name in ("manifest.json", "localization_items.parquet"):
        remote.write_bytes(name, (localization_run / name).read_bytes())
    definition = write_definition(tmp_path, study_id="s3-overall", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=remote.uri, items=6, items_per_hit=3,
                                  assignments_per_hit=2, reward_usd=0.5, catch_trial_rate=0.0, budget_usd=10.0,
                                  seed=1, subject="object")
    ledger = build_study(load_study(definition), tmp_path / "built")
    assert len(ledger.items) == 6 and ledger.data["study"]["source"] == "s3://eml-runs/localization/run-1"
    assert len(list((tmp_path / "built" / "stimuli").glob("*.png"))) == 12


@pytest.mark.parametrize("split_rule", ["bogus", 7])
def test_a_manifests_split_rule_is_checked_before_it_is_used(localization_run, tmp_path, split_rule):
    """The run's manifest is data: its recorded split rule may only be one of the known rules."""
    import shutil

    from tests.hostile.harness import record

    run = tmp_path / "run"
    shutil.copytree(localization_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"] = {"split_rule": split_rule}
    (run / "manifest.json").write_text(json.dumps(manifest))
    definition = write_definition(tmp_path, study_id="bad-rule", kind="overall_map",
                                  methods=["decomposition", "gradcam"], source=str(run), items=2, items_per_hit=2,
                                  catch_trial_rate=0.0)
    with pytest.raises(StudyError, match=r"manifest.json: dataset.split_rule must be one of classes, official"):
        build_study(load_study(definition), tmp_path / "out")
    record("study build (localization manifest)", f"dataset.split_rule = {split_rule!r}", "clean_error")
