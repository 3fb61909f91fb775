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
    # deletion / insertion on the similarity (eml_core.faithfulness): one row per (pair, perturbed side, map
    # method or reference ordering, removal operator, curve, step); `fraction` is the share of the side's pixels
    # removed (deletion) or restored (insertion) in the ordering's order, `similarity` the pair's S afterwards
    "faithfulness_curves": pa.schema([
        ("pair_id", pa.string()), ("side", pa.string()), ("method", pa.string()), ("removal", pa.string()),
        ("curve", pa.string()), ("step", pa.int64()), ("fraction", pa.float64()), ("similarity", pa.float64()),
    ]),
    # point-specific faithfulness: one row per (pair, method, query pixel); drops of the pixel's partial
    # similarity when the top region of its point-specific map / random regions of equal area (mean) / the top
    # region of the method's overall map are removed from the other image
    "faithfulness_points": pa.schema([
        ("pair_id", pa.string()), ("side", pa.string()), ("method", pa.string()), ("removal", pa.string()),
        ("point", pa.int64()), ("point_x", pa.float64()), ("point_y", pa.float64()),
        ("region_fraction", pa.float64()), ("partial_similarity", pa.float64()), ("drop_top", pa.float64()),
        ("drop_random", pa.float64()), ("drop_overall", pa.float64()),
    ]),
    # one row per (removal, method): mean AUCs over pairs (a pair's AUC is the mean over its evaluated sides)
    # with percentile-bootstrap intervals over pairs; the point-specific ratio mean(drop_top) / mean(drop_random)
    # (null for methods without point-specific maps); lower deletion and higher insertion AUC are more faithful
    "faithfulness_summary": pa.schema([
        ("removal", pa.string()), ("method", pa.string()), ("reference", pa.bool_()), ("pairs", pa.int64()),
        ("deletion_auc", pa.float64()), ("deletion_auc_low", pa.float64()), ("deletion_auc_high", pa.float64()),
        ("insertion_auc", pa.float64()), ("insertion_auc_low", pa.float64()), ("insertion_auc_high", pa.float64()),
        ("point_pairs", pa.int64()), ("point_ratio", pa.float64()), ("point_ratio_low", pa.float64()),
        ("point_ratio_high", pa.float64()), ("point_ratio_vs_overall", pa.float64()),
        ("confidence", pa.float64()),
    ]),
    # cascading model randomization (eml_core.sanity): one row per (pair, side, method, depth); depth k has the
    # first k layers of the cascade re-initialised (head first, then backbone blocks from the top), `layer` is the
    # k-th; Spearman between the raw maps, SSIM between the presented maps, trained vs randomized model
    "sanity": pa.schema([
        ("pair_id", pa.string()), ("side", pa.string()), ("method", pa.string()), ("depth", pa.int64()),
        ("layer", pa.string()), ("spearman", pa.float64()), ("ssim", pa.float64()),
    ]),
    # one row per (method, depth): means over pairs with percentile-bootstrap intervals
    "sanity_summary": pa.schema([
        ("method", pa.string()), ("depth", pa.int64()), ("layer", pa.string()), ("pairs", pa.int64()),
        ("spearman", pa.float64()), ("spearman_low", pa.float64()), ("spearman_high", pa.float64()),
        ("ssim", pa.float64()), ("ssim_low", pa.float64()), ("ssim_high", pa.float64()),
        ("confidence", pa.float64()),
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
