"""Stable, documented schemas of the Parquet tables a run writes (see docs/results.md).

Every table is built through :func:`frame`, which fixes column order and types,
so a table has the same schema whether it holds zero rows or a million.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

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
    "errors": pa.schema([
        ("stage", pa.string()), ("item", pa.string()), ("file", pa.string()), ("line", pa.int64()),
        ("problem", pa.string()), ("severity", pa.string()),
    ]),
}


def frame(name: str, rows) -> pd.DataFrame:
    """A DataFrame with exactly the columns and dtypes of schema ``name`` (missing optional values -> null)."""
    schema = SCHEMAS[name]
    data = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    for column in schema.names:
        if column not in data.columns:
            data[column] = None
    table = pa.Table.from_pandas(data[schema.names], schema=schema, preserve_index=False)
    return table.to_pandas()


def to_arrow(name: str, data: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame(name, data), schema=SCHEMAS[name], preserve_index=False)
