"""Hostile study inputs: definition files, study folders and ledgers, responses, money amounts.

Every case is generated here (hypothesis where the input has structure) and recorded through the harness:
each `eml study ...` command must answer bad input with one line and exit status 2, never a traceback, and
never reach MTurk or S3 (both are replaced by doubles that fail the test if called).
"""

from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amt.ledger import Ledger
from amt.study import Study, StudyError, study_from_dict
from tests.amt.helpers import BASE_STUDY, FakeMTurk, image_url, make_ledger
from tests.hostile.harness import record, run_cli

VALID = dict(BASE_STUDY, budget_usd=20.0)
COMMANDS = ("launch", "collect", "analyze", "serve", "expire", "reject")


@pytest.fixture(autouse=True)
def no_aws(monkeypatch):
    """No hostile case may reach MTurk or S3: any client creation fails the test."""
    import boto3

    import amt.gateway
    import tasks.studies

    def forbidden(*args, **kwargs):
        raise AssertionError("a hostile input reached an AWS client")

    for module in (amt.gateway, tasks.studies):
        monkeypatch.setattr(module, "mturk_client", forbidden)
    monkeypatch.setattr(boto3, "client", forbidden)


def _argv(command: str, folder: Path) -> list[str]:
    return {"reject": ["study", "reject", str(folder), "ASSIGNMENT1", "--reason", "Failed the checks."],
            "serve": ["study", "serve", str(folder), "--port", "0"]}.get(command, ["study", command, str(folder)])


# --- definition files -------------------------------------------------------------------------------
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{1,4})?", fullmatch=True),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.none()), max_size=2))
FIELDS = sorted(set(Study.model_fields) - {"path"}) + [
    "qualifications.approval_rate", "qualifications.approved_hits", "qualifications.locales",
    "qualifications.exclude_previous", "stimuli.bucket", "stimuli.prefix", "stimuli.url_mode",
    "stimuli.presign_seconds", "unknown_field", "stimuli.unknown"]


def _mutated(changes) -> dict:
    definition = json.loads(json.dumps(VALID))
    for field, value in changes:
        if "." in field:
            parent, child = field.split(".")
            if not isinstance(definition.get(parent), dict):
                definition[parent] = {}
            definition[parent][child] = value
        else:
            definition[field] = value
    return definition


def _write(path: Path, definition, as_json: bool) -> Path:
    path.write_text(json.dumps(definition) if as_json else yaml.safe_dump(definition, allow_unicode=True))
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), HOSTILE_VALUES), min_size=1, max_size=3),
       as_json=st.booleans())
def test_mutated_definitions_are_refused_in_one_line_naming_file_and_field(changes, as_json, tmp_path):
    definition = _mutated(changes)
    path = _write(tmp_path / ("study.json" if as_json else "study.yaml"), definition, as_json)
    try:
        study = study_from_dict(definition, str(path))
    except StudyError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(f"{path}: field '"), message
        named = re.match(rf"{re.escape(str(path))}: field '([^']+)'", message).group(1)
        assert named.split(".")[0] in {f.split(".")[0] for f, _ in changes} | {"items_per_hit", "lifetime_seconds"}
    else:  # accepted: then every value is of its type and range, and the amounts are whole cents
        assert type(study.items) is int and type(study.qualifications.approved_hits) is int
        assert study.qualifications.approved_hits >= 0 and study.stimuli.presign_seconds >= 3600
        assert study.stimuli.bucket is None or re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", study.stimuli.bucket)
        assert study.reward_cents == Decimal(repr(study.reward_usd)) * 100
        assert study_from_dict(study.to_dict(), "again").to_dict() == {**study.to_dict(), "path": "again"}
    # the command line: one line, exit 2 (a valid definition fails later, at its missing source)
    run_cli(["study", "build", str(path), "--out", str(tmp_path / "out")], entry_point="eml study build",
            case=f"mutated definition {changes!r}"[:120])
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


@pytest.mark.parametrize("change,field", [
    ({"qualifications": {"approved_hits": -5}}, "qualifications.approved_hits"),
    ({"stimuli": {"bucket": 123}}, "stimuli.bucket"),
    ({"stimuli": {"presign_seconds": "abc"}}, "stimuli.presign_seconds"),
    ({"methods": "decomposition"}, "methods"),
    ({"methods": {"a": "decomposition", "b": "gradcam"}}, "methods"),
    ({"qualifications": ["approval_rate"]}, "qualifications"),
    ({"stimuli": "s3://bucket"}, "stimuli"),
    ({"items": "40"}, "items"),
    ({"reward_usd": "0.50"}, "reward_usd"),
    ({"reward_usd": 0.115}, "reward_usd"),
    ({"items": 10**30}, "items"),
    ({"items": True}, "items"),
    ({"stimuli": {"bucket": "Upper.Case"}}, "stimuli.bucket"),
    ({"stimuli": {"bucket": "xn--punycode"}}, "stimuli.bucket"),
    ({"stimuli": {"bucket": "ab"}}, "stimuli.bucket"),
    ({"stimuli": {"prefix": "../../etc"}}, "stimuli.prefix"),
    ({"qualifications": {"locales": [None]}}, "qualifications.locales.0"),
    ({"qualifications": {"locales": "US"}}, "qualifications.locales"),
    ({"methods": [None, "gradcam"]}, "methods.0"),
    ({"title": ""}, "title"),
    ({"source": "run\x00"}, "source"),
])
def test_the_red_teams_definitions(change, field, tmp_path):
    path = _write(tmp_path / "study.yaml", {**VALID, **change}, as_json=False)
    result = run_cli(["study", "build", str(path), "--out", str(tmp_path / "out")], entry_point="eml study build",
                     case=f"{field}: {change!r}"[:120])
    assert f"study.yaml: field '{field}'" in result.err


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + f"\nkeywords: *a{levels - 1}\n"


FILE_CASES = {
    "top level is a list": ("study.yaml", b"- study_id: x\n- kind: overall_map\n"),
    "top level is a number": ("study.yaml", b"42\n"),
    "top level is a string": ("study.yaml", b"just some text\n"),
    "top level is null": ("study.yaml", b"~\n"),
    "JSON top level is a list": ("study.json", b"[1, 2, 3]"),
    "empty file": ("study.yaml", b""),
    "only whitespace and comments": ("study.yaml", b"   \n# nothing\n"),
    "a JSON file holding YAML": ("study.json", b"study_id: x\nkind: overall_map\n"),
    "non-UTF-8 bytes": ("study.yaml", b"study_id: \xff\xfe\xfa\n"),
    "UTF-16 text": ("study.yaml", "study_id: abc\n".encode("utf-16")),
    "binary junk": ("study.yaml", bytes(range(256)) * 4),
    "unclosed YAML flow": ("study.yaml", b"methods: [a, b\n"),
    "tab indentation": ("study.yaml", b"stimuli:\n\tbucket: x\n"),
    "python object tag": ("study.yaml", b"study_id: !!python/object/apply:os.system ['true']\n"),
    "duplicate YAML key": ("study.yaml", yaml.safe_dump(VALID).encode() + b"budget_usd: 99999\n"),
    "duplicate JSON key": ("study.json", json.dumps(VALID)[:-1].encode() + b', "budget_usd": 99999}'),
    "impossible YAML date": ("study.yaml", b"study_id: 2026-13-45\n"),
    "JSON NaN budget": ("study.json", json.dumps({**VALID, "budget_usd": float("nan")}).encode()),
    "JSON Infinity reward": ("study.json", json.dumps({**VALID, "reward_usd": float("inf")}).encode()),
    "deep JSON nesting": ("study.json", b"[" * 100_000 + b"]" * 100_000),
    "deep YAML nesting": ("study.yaml", b"[" * 20_000 + b"]" * 20_000),
    "over 1 MB": ("study.yaml", b"# " + b"x" * (1 << 20) + b"\n"),
    "alias bomb": ("study.yaml", _bomb().encode()),
    "recursive alias": ("study.yaml", b"methods: &m [*m, gradcam]\n"),
    "unhashable key": ("study.yaml", b"? [a, b]\n: c\n"),
    "huge integer": ("study.yaml", b"study_id: ok-id\nitems: " + b"9" * 5000 + b"\n"),
    "nested nulls": ("study.yaml", yaml.safe_dump({**VALID, "qualifications": {"locales": None},
                                                   "stimuli": {"url_mode": None}}).encode()),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_malformed_definition_files(case, tmp_path):
    name, data = FILE_CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    result = run_cli(["study", "build", str(path), "--out", str(tmp_path / "out")], entry_point="eml study build",
                     case=case)
    assert str(path) in result.err


def test_definition_paths_that_are_not_files(tmp_path):
    (tmp_path / "a-folder.yaml").mkdir()
    cases = {"a directory as the definition": tmp_path / "a-folder.yaml",
             "a missing file": tmp_path / "missing.yaml",
             "a name too long for the file system": tmp_path / ("x" * 300 + ".yaml")}
    for case, path in cases.items():
        run_cli(["study", "build", str(path), "--out", str(tmp_path / "out")], entry_point="eml study build",
                case=case)
    definition = _write(tmp_path / "study.yaml", VALID, as_json=False)
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli(["study", "build", str(definition), "--out", str(tmp_path / "a-file")],
                     entry_point="eml study build", case="--out is a file")
    assert "not a folder" in result.err


# --- study folders: rebuilds --------------------------------------------------------------------------
REBUILD_CASES = {
    "a launch record": lambda ledger: ledger.data["launches"].append(
        {"live": False, "hit_type_id": "T1", "participated_qualification": None}),
    "a HIT id": lambda ledger: ledger.hits[0].update(hit_id="HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", status="launched"),
    "lab tokens": lambda ledger: ledger.data.setdefault("lab_tokens", []).append("t" * 24),
    "uploaded stimuli": lambda ledger: ledger.data.setdefault("stimulus_urls", {}).update(
        {ledger.items[0]["stimuli"]["A"]: "https://eml-stimuli.s3.amazonaws.com/x.png"}),
    "held assignments": lambda ledger: ledger.data.setdefault("review", {}).update(
        {"A1": {"hit_id": "H1", "reason": "catch"}}),
}


@pytest.mark.parametrize("case", [*sorted(REBUILD_CASES), "responses", "an unreadable ledger"])
def test_a_folder_with_more_than_a_build_is_never_rebuilt(case, tmp_path):
    folder = make_ledger(tmp_path / "study")
    if case in REBUILD_CASES:
        with Ledger.update(folder) as ledger:
            REBUILD_CASES[case](ledger)
    elif case == "responses":
        pd.DataFrame({"item_id": ["i-000000000000"]}).to_parquet(folder / "responses.parquet")
    else:
        (folder / "ledger.json").write_text("{not json")
    before = (folder / "ledger.json").read_bytes()
    definition = _write(tmp_path / "study.yaml", VALID, as_json=False)
    result = run_cli(["study", "build", str(definition), "--out", str(folder)], entry_point="eml study build",
                     case=f"rebuild a folder holding {case}")
    assert "refusing to rebuild" in result.err and "build into a new folder" in result.err
    assert (folder / "ledger.json").read_bytes() == before


# --- study folders: corrupt ledgers -------------------------------------------------------------------
def _corrupt(folder: Path, case: str) -> Path:
    ledger_file = folder / "ledger.json"
    data = json.loads(ledger_file.read_text())
    if case == "missing folder":
        return folder.parent / "nowhere"
    if case == "folder is a file":
        (folder.parent / "plain-file").write_text("x")
        return folder.parent / "plain-file"
    writes = {
        "no ledger.json": None,
        "ledger.json is a folder": "mkdir",
        "not JSON": b"{\"study\": ",
        "empty ledger": b"",
        "a JSON list": b"[]",
        "non-UTF-8 ledger": b"{\"salt\": \"\xff\"}",
        "deeply nested ledger": b"[" * 100_000 + b"]" * 100_000,
        "items is a string": {**data, "items": "everything"},
        "hits is null": {**data, "hits": None},
        "a HIT index as text": {**data, "hits": [{**data["hits"][0], "index": "0"}, *data["hits"][1:]]},
        "a stimulus path escaping the folder": {**data, "items": [
            {**data["items"][0], "stimuli": {"A": "../../../etc/passwd", "B": data["items"][0]["stimuli"]["B"]}},
            *data["items"][1:]]},
        "an extra HIT (more money)": {**data, "hits": [*data["hits"], {**data["hits"][-1], "index": 2}]},
        "a tampered request token": {**data, "hits": [{**data["hits"][0], "unique_request_token": "0" * 40},
                                                      *data["hits"][1:]]},
        "a study with a negative reward": {**data, "study": {**data["study"], "reward_usd": -1}},
        "a study budget as text": {**data, "study": {**data["study"], "budget_usd": "1000"}},
        "launches in both modes": {**data, "launches": [
            {"live": False, "hit_type_id": "T1", "participated_qualification": None},
            {"live": True, "hit_type_id": "T2", "participated_qualification": None}]},
        "an unknown top-level field": {**data, "extra": 1},
        "a lab token with a slash": {**data, "lab_tokens": ["../../../../etc/passwd-xx"]},
        "salt missing": {k: v for k, v in data.items() if k != "salt"},
    }
    change = writes[case]
    ledger_file.unlink()
    if change == "mkdir":
        ledger_file.mkdir()
    elif isinstance(change, bytes):
        ledger_file.write_bytes(change)
    elif change is not None:
        ledger_file.write_text(json.dumps(change))
    return folder


LEDGER_CASES = ["missing folder", "folder is a file", "no ledger.json", "ledger.json is a folder", "not JSON",
                "empty ledger", "a JSON list", "non-UTF-8 ledger", "deeply nested ledger", "items is a string",
                "hits is null", "a HIT index as text", "a stimulus path escaping the folder",
                "an extra HIT (more money)", "a tampered request token", "a study with a negative reward",
                "a study budget as text", "launches in both modes", "an unknown top-level field",
                "a lab token with a slash", "salt missing"]


@pytest.mark.parametrize("case", LEDGER_CASES)
def test_every_command_refuses_a_broken_study_folder(case, tmp_path):
    folder = _corrupt(make_ledger(tmp_path / "study"), case)
    for command in COMMANDS:
        result = run_cli(_argv(command, folder), entry_point=f"eml study {command}", case=case)
        assert "ledger" in result.err or "folder" in result.err or str(folder) in result.err


def _ledger_paths(data, prefix=()):
    """Every (path, value) in a ledger's JSON, for mutation."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key), value
            yield from _ledger_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield (*prefix, index), value
            yield from _ledger_paths(value, (*prefix, index))


@pytest.fixture(scope="module")
def clean_ledger(tmp_path_factory):
    folder = make_ledger(tmp_path_factory.mktemp("ledger") / "study", catch_trial_rate=0.25, items=8,
                         items_per_hit=3)
    return json.loads((folder / "ledger.json").read_text())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_ledgers_are_refused_or_still_valid(data, clean_ledger, tmp_path):
    ledger = json.loads(json.dumps(clean_ledger))
    paths = [p for p, _ in _ledger_paths(ledger)]
    path = data.draw(st.sampled_from(paths), label="path")
    value = data.draw(HOSTILE_VALUES, label="value")
    target = ledger
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    folder = tmp_path / "study"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "ledger.json").write_text(json.dumps(ledger))
    try:
        Ledger.load(folder)
    except StudyError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{folder / 'ledger.json'}: ")
        for command in ("analyze", "collect"):  # neither reaches anything past the ledger
            run_cli(_argv(command, folder), entry_point=f"eml study {command}",
                    case=f"ledger {'.'.join(map(str, path))} = {value!r}"[:120])
    else:  # still valid: the change kept every type, range and cross-reference
        record("study ledger (Ledger.load)", f"{'.'.join(map(str, path))} = {value!r}"[:120], "handled")


# --- commands: other hostile arguments ----------------------------------------------------------------
def test_hostile_command_arguments(tmp_path):
    folder = make_ledger(tmp_path / "study", budget_usd=1.0)  # the study costs $3.60
    cases = [
        ("launch", ["study", "launch", str(folder)], "over the budget cap", "exceeds the budget cap $1.00"),
        ("launch", ["study", "launch", str(folder), "--live"], "live over the cap", "exceeds the budget cap"),
        ("reject", ["study", "reject", str(folder), "../../x", "--reason", "no"], "assignment id with a path",
         "is not an MTurk assignment id"),
        ("reject", ["study", "reject", str(folder), "A" * 65, "--reason", "no"], "assignment id too long",
         "is not an MTurk assignment id"),
        ("reject", ["study", "reject", str(folder), "ASSIGN1", "--reason", "   "], "blank reason",
         "a reason for the worker is required"),
        ("reject", ["study", "reject", str(folder), "ASSIGN1", "--reason", "x" * 2000], "reason over 1024",
         "MTurk takes at most 1024"),
        ("serve", ["study", "serve", str(folder), "--participants", "-3", "--port", "0"], "negative participants",
         "not a number of participants"),
        ("serve", ["study", "serve", str(folder), "--participants", "100000", "--port", "0"], "100000 participants",
         "not a number of participants"),
        ("serve", ["study", "serve", str(folder), "--port", "70000"], "port 70000", "is not a TCP port"),
        ("serve", ["study", "serve", str(folder), "--port", "-1"], "port -1", "is not a TCP port"),
        ("serve", ["study", "serve", str(folder), "--port", "eighty"], "port not a number", "is not a valid integer"),
        ("analyze", ["study", "analyze", str(folder)], "no responses yet", "no responses yet"),
    ]
    for command, argv, case, expected in cases:
        result = run_cli(argv, entry_point=f"eml study {command}", case=case)
        assert expected in result.err, (case, result.err)
    assert "lab_tokens" not in Ledger.load(folder).data  # refused participants were never added

    no_bucket = make_ledger(tmp_path / "no-bucket", stimuli={"url_mode": "public"})
    result = run_cli(["study", "launch", str(no_bucket)], entry_point="eml study launch", case="no bucket")
    assert "field 'stimuli.bucket' is required" in result.err
    uncapped = make_ledger(tmp_path / "uncapped")
    result = run_cli(["study", "launch", str(uncapped), "--live"], entry_point="eml study launch",
                     case="--live without a cap")
    assert "needs a positive budget_usd cap" in result.err
    with Ledger.update(uncapped) as ledger:
        ledger.data["launches"] = [{"live": False, "hit_type_id": "T1", "participated_qualification": None}]
    for command in ("launch", "collect", "expire", "reject"):
        argv = [*_argv(command, uncapped), "--live"]
        result = run_cli(argv, entry_point=f"eml study {command}", case="--live on a sandbox study")
        assert "launched in the sandbox" in result.err


# --- analysis -----------------------------------------------------------------------------------------
def test_corrupt_responses_tables(tmp_path):
    folder = make_ledger(tmp_path / "study")
    cases = {
        "not Parquet": lambda path: path.write_bytes(b"PAR1 but not really"),
        "empty file": lambda path: path.write_bytes(b""),
        "a folder": lambda path: path.mkdir(),
        "wrong column types": lambda path: pd.DataFrame({"item_id": [1, 2], "is_catch": ["yes", "no"],
                                                         "score_a": ["a", "b"]}).to_parquet(path),
    }
    for case, make in cases.items():
        path = folder / "responses.parquet"
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        make(path)
        result = run_cli(["study", "analyze", str(folder)], entry_point="eml study analyze",
                         case=f"responses.parquet: {case}")
        assert "responses.parquet" in result.err


ANSWERS = st.sampled_from(["2", "1", "0", "-1", "-2"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.integers(0, 5), ANSWERS), min_size=1,
                     max_size=40))
def test_analysis_counts_only_the_ledgers_items_and_records_the_rest(rows, tmp_path):
    """Each row: an item (0-5 are the study's, 6-7 unknown ids), real or stray, a worker, an answer."""
    from amt.analysis import analyse_folder
    from tests.amt.test_analysis import responses_table

    folder = tmp_path / "study"
    shutil.rmtree(folder, ignore_errors=True)
    make_ledger(folder, items=6, items_per_hit=3)
    ledger = Ledger.load(folder)
    ids = [i["item_id"] for i in ledger.items] + ["i-aaaaaaaaaaaa", "i-bbbbbbbbbbbb"]
    table = responses_table([{"study_id": ledger.study_id, "source": "lab", "assignment_id": f"a{worker}",
                       "worker_hash": f"{worker:016x}", "item_id": ids[item], "is_catch": False,
                       "answer_raw": answer, "score_a": int(answer), "first_method": "decomposition",
                       "score_first_method": int(answer)} for item, _, worker, answer in rows])
    table.to_parquet(folder / "responses.parquet")
    known = sum(item < 6 for item, *_ in rows)
    unknown_items = {ids[item] for item, *_ in rows if item >= 6}
    case = f"{len(rows)} answers, {len(unknown_items)} unknown items"
    try:
        result = analyse_folder(folder)
    except StudyError as error:
        assert known == 0 and "none of the responses answers an item" in str(error)
        record("study analysis", case, "clean_error")
        return
    summary = result["summary"].iloc[0]
    assert summary["answers"] + summary["answers_excluded"] == known
    recorded = set(pd.read_parquet(folder / "errors.parquet")["item"]) if unknown_items else set()
    assert recorded == unknown_items
    record("study analysis", case, "errors_row" if unknown_items else "handled")


# --- money at the gateway -----------------------------------------------------------------------------
@pytest.mark.parametrize("balance", ["NaN", "-5.00", "abc", "", "1,000.00", "Infinity", "0.001", "sNaN"])
def test_hostile_balance_answers(balance, tmp_path):
    from amt.gateway import BudgetError, Gateway

    folder = make_ledger(tmp_path / "study", budget_usd=10.0)
    fake = FakeMTurk()
    fake.get_account_balance = lambda: {"AvailableBalance": balance}
    with pytest.raises(BudgetError):
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
    assert not fake.hits and not fake.hit_types
    record("MTurk gateway (launch)", f"AvailableBalance {balance!r}", "clean_error")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reward=st.one_of(st.floats(0.01, 5.0), st.decimals("0.01", "5.00", places=3).map(float)),
       bonus=st.one_of(st.just(0.0), st.floats(0.0, 2.0), st.decimals("0", "2", places=2).map(float)),
       budget=st.decimals("0", "100", places=2).map(float), per_hit=st.integers(1, 15))
def test_hostile_amounts_never_commit_more_than_the_cap(reward, bonus, budget, per_hit, tmp_path):
    from amt.gateway import BudgetError, Gateway

    folder = tmp_path / "study"
    shutil.rmtree(folder, ignore_errors=True)
    case = f"reward {reward!r}, bonus {bonus!r}, cap {budget!r}, {per_hit} assignments"[:120]
    try:
        make_ledger(folder, reward_usd=reward, bonus_usd=bonus, budget_usd=budget, assignments_per_hit=per_hit)
    except StudyError as error:
        assert "must be a whole number of cents" in str(error)
        record("MTurk gateway (launch)", case, "clean_error")
        return
    fake = FakeMTurk(bonus_usd=Decimal(repr(bonus)))
    try:
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
        outcome = "handled"
    except BudgetError:
        assert not fake.hits
        outcome = "clean_error"
    if budget > 0:
        assert fake.committed() <= Decimal(repr(budget))
    assert all(Decimal(t["Reward"]) == Decimal(repr(reward)) for t in fake.hit_types.values())
    record("MTurk gateway (launch)", case, outcome)


# --- workers' answers (MTurk collection) --------------------------------------------------------------
def _xml(inner: str, doctype: str = "") -> str:
    return (f'<?xml version="1.0"?>{doctype}<QuestionFormAnswers><Answer><QuestionIdentifier>taskAnswers'
            f'</QuestionIdentifier><FreeText>{inner}</FreeText></Answer></QuestionFormAnswers>')


def _entity_bomb() -> str:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    return _xml("&j;", f"<!DOCTYPE l [{entities}]>")


HOSTILE_ANSWERS = {
    "entity expansion bomb": _entity_bomb(),
    "external entity (XXE)": _xml("&x;", '<!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
    "JSON nested 100000 deep": _xml("[" * 100_000 + "]" * 100_000),
    "taskAnswers entries that are not objects": _xml("[1, 2, 3]"),
    "two radio values chosen": _xml(json.dumps([{"q0": {"2": True, "1": True}}])),
    "5000 unknown fields": _xml(json.dumps([{f"field{n}": "2" for n in range(5000)}])),
    "a 10000-character answer": _xml(json.dumps([{"q0": "2" * 10_000}])),
    "answers out of range": _xml(json.dumps([{"q0": "3", "q1": "-7"}])),
    "not XML at all": "{'q0': 2}",
    "empty answer document": "",
    "answer document is null": None,
}


def test_hostile_answer_documents_become_errors_rows(tmp_path):
    from amt.collect import collect
    from amt.responses import read_study_table

    folder = make_ledger(tmp_path / "study")
    with Ledger.update(folder) as ledger:
        ledger.hits[0].update(hit_id="HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA", status="launched")
        ledger.data["launches"] = [{"live": False, "hit_type_id": "T1", "participated_qualification": "QP1"}]
    fake = FakeMTurk()
    fake.assignments["HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA"] = [
        {"AssignmentId": f"ASSIGN{n}", "WorkerId": f"WORKER{n}", "HITId": "HIT0AAAAAAAAAAAAAAAAAAAAAAAAAA",
         "AssignmentStatus": "Submitted", "Answer": document}
        for n, document in enumerate(HOSTILE_ANSWERS.values())]
    summary = collect(fake, folder, log=lambda *_: None)
    errors = pd.read_parquet(folder / "errors.parquet")
    responses = read_study_table(folder, "responses")
    assert not fake.approved and summary["held_for_review"] == len(HOSTILE_ANSWERS)
    assert set(responses["answer_raw"]) <= {"2", "1", "0", "-1", "-2"}
    assert not responses.astype(str).apply(lambda column: column.str.contains("root:")).any().any()
    assert errors["problem"].str.len().max() < 400  # no worker-sized text copied into the table
    for n, case in enumerate(HOSTILE_ANSWERS):
        assert (errors["item"] == f"ASSIGN{n}").any(), case
        record("MTurk collect (workers' answers)", case, "errors_row")
