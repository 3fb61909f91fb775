"""Results I/O: one storage layer for local folders and S3, and tables that refuse wrong columns."""

from __future__ import annotations

import pandas as pd
import pytest

from eml_core.results import ResultsError, ResultsLocation
from eml_core.tables import SCHEMAS, TableSchemaError, frame

ERROR_ROW = {"stage": "load", "item": "1", "file": "a.txt", "line": 3, "problem": "bad", "severity": "error"}


def test_a_row_with_an_unknown_or_missing_column_is_an_error_not_an_empty_column():
    with pytest.raises(TableSchemaError,
                       match=r"table 'errors': unknown column\(s\) problme; missing column\(s\) problem"):
        frame("errors", [{**{k: v for k, v in ERROR_ROW.items() if k != "problem"}, "problme": "typo"}])
    with pytest.raises(TableSchemaError, match=r"missing column\(s\) severity"):
        frame("errors", [{k: v for k, v in ERROR_ROW.items() if k != "severity"}])
    with pytest.raises(TableSchemaError, match="values do not fit the schema"):
        frame("errors", [{**ERROR_ROW, "line": "three"}])
    empty = frame("errors", [])
    assert list(empty.columns) == SCHEMAS["errors"].names and len(empty) == 0
    assert frame("errors", [ERROR_ROW])["line"].tolist() == [3]


def _round_trip(store: ResultsLocation):
    store.write_table("tables/errors.parquet", "errors", [ERROR_ROW])
    store.write_json("manifest.json", {"kind": "test", "n": 1})
    store.write_bytes("figures/a.png", b"\x89PNG fake")
    assert store.exists("tables/errors.parquet") and not store.exists("tables/missing.parquet")
    assert store.list() == ["figures/a.png", "manifest.json", "tables/errors.parquet"]
    assert store.list("figures") == ["figures/a.png"]
    assert store.list("nothing-here") == []
    assert store.read_json("manifest.json") == {"kind": "test", "n": 1}
    assert store.read_table("tables/errors.parquet", "errors").equals(frame("errors", [ERROR_ROW]))
    with pytest.raises(ResultsError, match=r"tables/missing\.parquet: no such file"):
        store.read_table("tables/missing.parquet")
    store.write_bytes("broken.parquet", b"")
    with pytest.raises(ResultsError, match=r"broken\.parquet: not a readable Parquet table"):
        store.read_table("broken.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(buffer := __import__("io").BytesIO())
    store.write_bytes("other.parquet", buffer.getvalue())
    with pytest.raises(TableSchemaError, match=r"other\.parquet: table 'errors': unknown column\(s\) x"):
        store.read_table("other.parquet", "errors")
    child = store.child("runs/one")
    child.write_json("m.json", [1])
    assert store.read_json("runs/one/m.json") == [1]
    assert child.location_of("m.json") == store.location_of("runs/one/m.json")


def test_local_folder(tmp_path):
    store = ResultsLocation(tmp_path / "run")
    _round_trip(store)
    assert not [p for p in (tmp_path / "run").rglob("*.part")]  # no temporary files left behind


def test_s3_on_moto(s3_endpoint):
    import boto3

    boto3.client("s3").create_bucket(Bucket="eml-results-io")
    store = ResultsLocation("s3://eml-results-io/some/prefix")
    _round_trip(store)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="eml-results-io")["Contents"]]
    assert "some/prefix/manifest.json" in keys
    assert store.location_of("manifest.json") == "s3://eml-results-io/some/prefix/manifest.json"


def test_docs_results_lists_every_table_and_column():
    """docs/results.md stays true to the schemas: every table is a heading, every column is named."""
    import re
    from pathlib import Path

    from eml_core.tables import SCHEMAS

    text = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    sections = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^##|\Z)", text, re.M | re.S))
    assert set(sections) == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        missing = [column for column in schema.names if f"`{column}`" not in sections[name]]
        assert not missing, (name, missing)
