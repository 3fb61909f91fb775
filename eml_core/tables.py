"""Stable schemas of every Parquet table eml writes, one definition each (described in docs/results.md).

Every table is built through :func:`frame`, which fixes column order and types,
so a table has the same schema whether it holds zero rows or a million.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from eml_core.errors import EmlError

# The answers of a human study: (score for the first method, name) from +2 to -2.
ANSWER_CATEGORIES = ((2, "clearly_more"), (1, "slightly_more"), (0, "equally"), (-1, "slightly_less"),
                     (-2, "clearly_less"))

STUDY_SUMMARY = pa.schema([
    ("study_id", pa.string()), ("first_method", pa.string()), ("second_method", pa.string()),
    ("answers", pa.int64()), ("items", pa.int64()), ("workers", pa.int64()), ("workers_total", pa.int64()),
    ("answers_excluded", pa.int64()), ("target_workers", pa.int64()), ("target_met", pa.bool_()),
    *[(f"share_{name}", pa.float64()) for _, name in ANSWER_CATEGORIES],
    ("mean_score", pa.float64()), ("mean_score_ci_items_low", pa.float64()), ("mean_score_ci_items_high", pa.float64()),
    ("mean_score_ci_workers_low", pa.float64()), ("mean_score_ci_workers_high", pa.float64()),
    ("prefer_first_share", pa.float64()), ("prefer_first_ci_items_low", pa.float64()),
    ("prefer_first_ci_items_high", pa.float64()), ("prefer_first_ci_workers_low", pa.float64()),
    ("prefer_first_ci_workers_high", pa.float64()),
    ("answers_positive", pa.int64()), ("answers_negative", pa.int64()),
    ("sign_test_items_positive", pa.int64()), ("sign_test_items_negative", pa.int64()), ("sign_test_p", pa.float64()),
    ("wilcoxon_items_p", pa.float64()), ("catch_answers", pa.int64()), ("catch_failure_rate", pa.float64()),
    ("workers_failing_catch", pa.int64()), ("straightliners", pa.int64()),
])
WORKER_PATTERNS = pa.schema([
    ("study_id", pa.string()), ("worker_hash", pa.string()), ("answers", pa.int64()), ("catch_answers", pa.int64()),
    ("catch_failed", pa.int64()), ("most_common_answer", pa.string()), ("most_common_share", pa.float64()),
    ("straightlining", pa.bool_()), ("mean_work_seconds", pa.float64()),
])



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
        ("model", pa.string()), ("loss", pa.string()), ("checkpoint_sha256", pa.string()), ("method", pa.string()),
        ("recall_at_1_train", pa.float64()), ("recall_at_1_test", pa.float64()),
        ("train_localization_accuracy", pa.float64()), ("best_threshold", pa.float64()),
        ("reference_model", pa.string()), ("accuracy_drop_vs_reference", pa.float64()),
    ]),
    # one row per image of a gallery index (eml_core.gallery_index), in the order of its embeddings; the path is
    # relative to the index's recorded root; camera is null outside re-identification datasets
    "gallery_index_items": pa.schema([
        ("image_id", pa.string()), ("relative_path", pa.string()), ("label", pa.int64()), ("camera", pa.int64()),
        ("split", pa.string()), ("height", pa.int64()), ("width", pa.int64()),
    ]),
    # interactive retrieval (eml_core.region_retrieval): one row per (query, region, method, rank). The region is a
    # box in original query pixels (pixel edges); a point query has box_x0 = box_x1 = x, box_y0 = box_y1 = y.
    # region_feature names how the query vector was made: centre (paper), box_mean, whole_image, crop, mask.
    # gallery_image is the resolved path, gallery_relative_path the path under the index root.
    "retrieval_rankings": pa.schema([
        ("query_id", pa.string()), ("query_image", pa.string()), ("query_label", pa.int64()),
        ("region_kind", pa.string()),
        ("box_x0", pa.float64()), ("box_y0", pa.float64()), ("box_x1", pa.float64()), ("box_y1", pa.float64()),
        ("method", pa.string()), ("region_feature", pa.string()), ("rank", pa.int64()),
        ("gallery_id", pa.string()), ("gallery_image", pa.string()), ("gallery_relative_path", pa.string()),
        ("gallery_label", pa.int64()), ("score", pa.float64()),
    ]),
    # retrieval benchmarks (eml_core.retrieval_benchmark), long format: one row per (benchmark, method, metric, k).
    # metric: precision (precision@k), map (k null), cmc (Rank-k, re-id rules); count = queries averaged over
    "retrieval_eval": pa.schema([
        ("benchmark", pa.string()), ("method", pa.string()), ("region_feature", pa.string()), ("metric", pa.string()),
        ("k", pa.int64()), ("value", pa.float64()), ("count", pa.int64()),
    ]),
    # per query of a retrieval run (eml_core.retrieval_benchmark.label_query_eval): precision@k (metric precision)
    # and average precision (metric ap, k null), relevance = gallery label equals the label of the query region's
    # content; relevant = R, the relevant gallery images of that query. retrieval_eval holds their means.
    "retrieval_query_eval": pa.schema([
        ("query_id", pa.string()), ("method", pa.string()), ("region_feature", pa.string()), ("metric", pa.string()),
        ("k", pa.int64()), ("value", pa.float64()), ("relevant", pa.int64()),
    ]),
    # human studies: one row per answer, from MTurk or the lab (amt/responses.py describes every column)
    "responses": pa.schema([
        ("study_id", pa.string()), ("source", pa.string()), ("hit_index", pa.int64()), ("hit_id", pa.string()),
        ("assignment_id", pa.string()), ("worker_hash", pa.string()), ("item_id", pa.string()),
        ("position", pa.int64()), ("is_catch", pa.bool_()), ("method_a", pa.string()), ("method_b", pa.string()),
        ("answer_raw", pa.string()), ("score_a", pa.int64()), ("first_method", pa.string()),
        ("score_first_method", pa.int64()), ("catch_expected", pa.string()), ("catch_passed", pa.bool_()),
        ("accept_time", pa.string()), ("submit_time", pa.string()), ("work_seconds", pa.float64()),
    ]),
    # one row per study: shares of the five answers (Fig. 6 / 12), tests, intervals (amt/analysis.py)
    "study_summary": STUDY_SUMMARY,
    # one row per worker: answers, catch trials, straight-lining
    "worker_patterns": WORKER_PATTERNS,
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
    # the run catalog (tasks/runs.py): one row per finished run of any kind; parameters and headline are JSON
    "run_catalog": pa.schema([
        ("kind", pa.string()), ("run_id", pa.string()), ("started_at", pa.string()), ("finished_at", pa.string()),
        ("location", pa.string()), ("dataset", pa.string()), ("split_rule", pa.string()), ("model", pa.string()),
        ("checkpoint_sha256", pa.string()), ("git_commit", pa.string()), ("parameters", pa.string()),
        ("headline", pa.string()), ("errors", pa.int64()), ("warnings", pa.int64()),
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
    # everything a run or a study could not use, or used with a caveat; the same for every kind of run
    "errors": pa.schema([
        ("stage", pa.string()), ("item", pa.string()), ("file", pa.string()), ("line", pa.int64()),
        ("problem", pa.string()), ("severity", pa.string()),
    ]),
    # the raw overall map of each scored (pair, side, method) at feature resolution (eml_core.stored_maps):
    # map = (raw / scale) as little-endian float16, row-major, map_height x map_width; the image's own size
    # (what the map is upsampled to before thresholding) beside it
    "localization_maps": pa.schema([
        ("pair_id", pa.string()), ("image_id", pa.string()), ("side", pa.string()), ("method", pa.string()),
        ("image_height", pa.int64()), ("image_width", pa.int64()),
        ("map_height", pa.int64()), ("map_width", pa.int64()), ("scale", pa.float64()), ("map", pa.binary()),
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
