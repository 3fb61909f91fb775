"""Stable, documented schemas of every Parquet table eml writes (described in docs/results.md).

Every table is built through :func:`frame`, which fixes column order and types,
so a table has the same schema whether it holds zero rows or a million.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from eml_core.errors import EmlError

SCHEMAS: dict[str, pa.Schema] = {
    # one row per (pair, side, method, threshold)
    "localization_items": pa.schema([
        ("pair_id", pa.string()), ("image_id", pa.string()), ("image", pa.string()), ("split", pa.string()),
        ("label", pa.int64()), ("side", pa.string()), ("partner_id", pa.string()), ("method", pa.string()),
        ("threshold", pa.float64()),
        ("box_x0", pa.float64()), ("box_y0", pa.float64()), ("box_x1", pa.float64()), ("box_y1", pa.float64()),
        ("gt_x0", pa.float64()), ("gt_y0", pa.float64()), ("gt_x1", pa.float64()), ("gt_y1", pa.float64()),
        ("iou", pa.float64()), ("correct", pa.bool_()), ("map_flagged", pa.bool_()),
    ]),
    # Table I: accuracy per method and threshold (paper grid)
    "localization_summary": pa.schema([
        ("method", pa.string()), ("threshold", pa.float64()), ("accuracy", pa.float64()), ("count", pa.int64()),
    ]),
    # Table II: best accuracy per method
    "localization_best": pa.schema([
        ("method", pa.string()), ("best_threshold", pa.float64()), ("best_accuracy", pa.float64()),
        ("count", pa.int64()),
    ]),
    "maxboxacc": pa.schema([
        ("method", pa.string()), ("iou_threshold", pa.float64()), ("maxboxacc", pa.float64()),
        ("best_map_threshold", pa.float64()), ("count", pa.int64()),
    ]),
    "retrieval_metrics": pa.schema([
        ("model", pa.string()), ("split", pa.string()), ("k", pa.int64()), ("recall", pa.float64()),
        ("count", pa.int64()),
    ]),
    # Tables III / IV: one row per (model, method)
    "diagnosis": pa.schema([
        ("model", pa.string()), ("checkpoint_sha256", pa.string()), ("method", pa.string()),
        ("recall_at_1_train", pa.float64()), ("recall_at_1_test", pa.float64()),
        ("train_localization_accuracy", pa.float64()), ("best_threshold", pa.float64()),
        ("reference_model", pa.string()), ("accuracy_drop_vs_reference", pa.float64()),
    ]),
    # cross-view orientation (paper Section VII-A): one row per (pair, rotation, overall map, method); angles in
    # degrees (eml_core.orientation conventions), chosen pixels in the pair's own (cropped) image coordinates
    "orientation_items": pa.schema([
        ("pair_id", pa.string()), ("panorama", pa.string()), ("aerial", pa.string()), ("split", pa.string()),
        ("rotation", pa.float64()), ("truth", pa.float64()), ("aerial_fill", pa.string()),
        ("overall_map", pa.string()), ("method", pa.string()), ("estimate", pa.float64()), ("error", pa.float64()),
        ("abs_error", pa.float64()),
        ("panorama_x", pa.float64()), ("panorama_y", pa.float64()), ("panorama_azimuth", pa.float64()),
        ("panorama_value", pa.float64()),
        ("aerial_x", pa.float64()), ("aerial_y", pa.float64()), ("aerial_azimuth", pa.float64()),
        ("aerial_value", pa.float64()), ("similarity", pa.float64()), ("map_flagged", pa.bool_()),
    ]),
    # Fig. 9 in numbers: per (overall map, method, fill), shares of |error| <= 3.5 / 10 / 30 degrees
    "orientation_summary": pa.schema([
        ("overall_map", pa.string()), ("method", pa.string()), ("aerial_fill", pa.string()),
        ("within_3_5", pa.float64()), ("within_10", pa.float64()), ("within_30", pa.float64()),
        ("median_abs_error", pa.float64()), ("mean_abs_error", pa.float64()), ("count", pa.int64()),
        ("flagged", pa.int64()), ("chance_within_3_5", pa.float64()),
    ]),
    # Fig. 9: 7-degree bins centred on 0 (the bin centred on 180 holds |error| > 178.5)
    "orientation_histogram": pa.schema([
        ("overall_map", pa.string()), ("method", pa.string()), ("aerial_fill", pa.string()),
        ("bin_centre", pa.float64()), ("bin_low", pa.float64()), ("bin_high", pa.float64()),
        ("count", pa.int64()), ("share", pa.float64()),
    ]),
    # street-to-aerial Recall@1/5/10/1% of a cross-view model (`at` is "1", "5", "10" or "1%"; k the cut-off)
    "crossview_recall": pa.schema([
        ("model", pa.string()), ("split", pa.string()), ("at", pa.string()), ("k", pa.int64()),
        ("recall", pa.float64()), ("count", pa.int64()),
    ]),
    "errors": pa.schema([
        ("stage", pa.string()), ("item", pa.string()), ("file", pa.string()), ("line", pa.int64()),
        ("problem", pa.string()), ("severity", pa.string()),
    ]),
}


class TableSchemaError(EmlError):
    """Rows do not have exactly the columns of their table's schema."""


def frame(name: str, rows, source: str | None = None) -> pd.DataFrame:
    """A DataFrame with exactly the columns (in order) and dtypes of schema ``name``.

    ``rows`` (dicts or a DataFrame) must carry every column of the schema and no
    other: a misspelt or forgotten column is an error here, never a silently
    empty column in a published table. No rows at all is an empty table.
    """
    schema = SCHEMAS[name]
    data = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    if len(data.columns) == 0 and len(data) == 0:
        return schema.empty_table().to_pandas()
    unknown = [c for c in data.columns if c not in schema.names]
    missing = [c for c in schema.names if c not in data.columns]
    if unknown or missing:
        where = f"{source}: " if source else ""
        raise TableSchemaError(f"{where}table {name!r}: " + "; ".join(
            part for part in (f"unknown column(s) {', '.join(map(str, unknown))}" if unknown else "",
                              f"missing column(s) {', '.join(missing)}" if missing else "") if part))
    try:
        table = pa.Table.from_pandas(data[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        where = f"{source}: " if source else ""
        raise TableSchemaError(f"{where}table {name!r}: values do not fit the schema ({error})") from None
    return table.to_pandas()


def to_arrow(name: str, data) -> pa.Table:
    return pa.Table.from_pandas(frame(name, data), schema=SCHEMAS[name], preserve_index=False)
