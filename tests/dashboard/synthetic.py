"""Hand-made results roots for the dashboard: localization runs of any size (tables and stored maps following the
schemas, boxes made up rather than swept, so 5,000 images take seconds), orientation and retrieval runs following
their schemas, and a launched study with answers and held assignments. Used by the tests and by
benchmarks/bench_dashboard.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from eml_core.datasets import load_cub
from eml_core.results import ResultsLocation
from eml_core.stored_maps import encode
from eml_core.sweep import FINE_THRESHOLDS, PAPER_THRESHOLDS, accuracy_table, best_per_method, max_box_accuracy
from eml_core.tables import frame
from tasks.runs import finish_run, start_run

METHODS = ("gradcam", "gradcam_nonorm", "decomposition", "decomposition_bias")
# How well each made-up method localizes (how close its box is to the truth, on average).
SKILL = {"gradcam": 0.55, "gradcam_nonorm": 0.7, "decomposition": 0.75, "decomposition_bias": 0.7}


def _images(dataset_root: Path | None, count: int, rng: np.random.Generator) -> list[dict]:
    """``count`` items: the dataset's own images (cycled) when a dataset is given, else made-up ones."""
    if dataset_root is not None:
        data = load_cub(dataset_root)
        found = [{"image": i.relative_path, "size": i.size, "box": i.box, "label": i.label} for i in data.items]
        return [found[n % len(found)] for n in range(count)]
    chosen = []
    for n in range(count):
        height, width = (int(v) for v in rng.integers(192, 288, size=2))
        x0, y0 = float(rng.integers(0, width // 3)), float(rng.integers(0, height // 3))
        chosen.append({"image": f"images/{n:05d}.jpg", "size": (height, width), "label": int(n % 20),
                       "box": (x0, y0, x0 + width / 2, y0 + height / 2)})
    return chosen


def localization_run(root: Path | str, images: int, dataset_root: Path | None = None, seed: int = 0,
                     methods=METHODS, thresholds=FINE_THRESHOLDS, skill_shift: float = 0.0,
                     model: str = "runs/model.pt", checkpoint: str = "a" * 64) -> dict:
    """A finished localization run of ``images`` query images under the results root ``root``; returns its catalog
    row. Every table has its schema; boxes shrink as the threshold grows around a per-method, per-image offset."""
    rng = np.random.default_rng(seed)
    chosen = _images(dataset_root, images, rng)
    run = start_run("localization", str(root))
    n_thresholds = len(thresholds)
    t = np.asarray(thresholds, dtype=float)
    columns: dict[str, list] = {name: [] for name in frame("localization_items", []).columns}
    maps = []
    for method in methods:
        skill = min(0.95, SKILL.get(method, 0.6) + skill_shift)
        offsets = rng.normal(0, 1 - skill, size=(images, 2))
        for n, item in enumerate(chosen):
            height, width = item["size"]
            gx0, gy0, gx1, gy1 = item["box"]
            w, h = gx1 - gx0, gy1 - gy0
            grow = 1.6 - 1.2 * t                                          # bigger boxes at low thresholds
            cx, cy = (gx0 + gx1) / 2 + offsets[n, 0] * w / 2, (gy0 + gy1) / 2 + offsets[n, 1] * h / 2
            x0, x1 = np.clip(cx - w * grow / 2, 0, width), np.clip(cx + w * grow / 2, 0, width)
            y0, y1 = np.clip(cy - h * grow / 2, 0, height), np.clip(cy + h * grow / 2, 0, height)
            inter = np.clip(np.minimum(x1, gx1) - np.maximum(x0, gx0), 0, None) * \
                np.clip(np.minimum(y1, gy1) - np.maximum(y0, gy0), 0, None)
            iou = inter / ((x1 - x0) * (y1 - y0) + w * h - inter)
            pair = f"p{n:05d}"
            for name, values in (("pair_id", [pair] * n_thresholds), ("image_id", [str(n)] * n_thresholds),
                                 ("image", [item["image"]] * n_thresholds), ("split", ["test"] * n_thresholds),
                                 ("label", [item["label"]] * n_thresholds), ("side", ["query"] * n_thresholds),
                                 ("partner_id", [str((n + 1) % images)] * n_thresholds),
                                 ("method", [method] * n_thresholds), ("threshold", list(t)),
                                 ("box_x0", list(x0)), ("box_y0", list(y0)), ("box_x1", list(x1)), ("box_y1", list(y1)),
                                 ("gt_x0", [gx0] * n_thresholds), ("gt_y0", [gy0] * n_thresholds),
                                 ("gt_x1", [gx1] * n_thresholds), ("gt_y1", [gy1] * n_thresholds),
                                 ("iou", list(iou)), ("correct", list(iou > 0.5)),
                                 ("map_flagged", [False] * n_thresholds)):
                columns[name].extend(values)
            grid_y, grid_x = np.mgrid[0:7, 0:7]
            centre_x, centre_y = cx / width * 7 - 0.5, cy / height * 7 - 0.5
            blob = np.exp(-((grid_x - centre_x) ** 2 + (grid_y - centre_y) ** 2) / 3.0) - 0.1
            maps.append({"pair_id": pair, "image_id": str(n), "side": "query", "method": method,
                         "image_height": height, "image_width": width, **encode(blob.astype(np.float32))})
    items = frame("localization_items", pd.DataFrame(columns))
    summary = frame("localization_summary", accuracy_table(items, PAPER_THRESHOLDS))
    best = frame("localization_best", best_per_method(summary))
    boxacc = frame("maxboxacc", max_box_accuracy(items))
    recall = frame("retrieval_metrics", [{"model": model, "split": "test", "k": k, "recall": min(1.0, 0.5 + 0.1 * k),
                                          "count": images} for k in (1, 2, 4, 8)])
    store = run.location
    for name, table in (("localization_items", items), ("localization_summary", summary),
                        ("localization_best", best), ("maxboxacc", boxacc), ("retrieval_metrics", recall),
                        ("errors", frame("errors", [])), ("localization_maps", frame("localization_maps", maps))):
        store.write_table(f"{name}.parquet", name, table)
    store.write_bytes("figures/accuracy_vs_threshold.png", _png(summary))
    manifest = {"kind": "evaluate_localization", "config": {"dataset": "synthetic-bench", "model": model,
                                                            "methods": list(methods), "seed": seed},
                "dataset": {"name": "synthetic", "root": str(dataset_root) if dataset_root else "/nowhere",
                            "items": images},
                "checkpoint": {"spec": model, "sha256": checkpoint}, "git_commit": "0" * 40, "errors": 0,
                "warnings": 0, "figures": ["figures/accuracy_vs_threshold.png"]}
    store.write_json("manifest.json", manifest)
    headline = {f"best_accuracy/{r['method']}": float(r["best_accuracy"]) for _, r in best.iterrows()}
    headline.update({f"recall@{r['k']}/{r['split']}": float(r["recall"]) for _, r in recall.iterrows()})
    return finish_run(run, manifest, dataset="synthetic-bench", model=model, checkpoint_sha256=checkpoint,
                      headline=headline)


def _png(summary: pd.DataFrame) -> bytes:
    from tasks.figures import accuracy_plot

    return accuracy_plot(summary, "synthetic")


def _figure_png(title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(3, 2), dpi=80)
    axes.bar(range(5), [1, 3, 7, 3, 1])
    axes.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def orientation_run(root: Path | str) -> dict:
    """A finished cross-view orientation run with every orientation table and two figures."""
    run = start_run("orientation", str(root))
    store = run.location
    rng = np.random.default_rng(1)
    items, summary, histogram = [], [], []
    for method in ("overall", "point_specific"):
        errors = rng.normal(0, 4 if method == "point_specific" else 20, size=12)
        for n, error in enumerate(errors):
            items.append({"pair_id": f"o{n}", "panorama": f"streetview/{n}.jpg", "aerial": f"bingmap/{n}.jpg",
                          "split": "val", "rotation": 30.0 * n, "truth": 30.0 * n, "aerial_fill": "reflect",
                          "overall_map": "decomposition", "method": method, "estimate": 30.0 * n - error,
                          "error": float(error), "abs_error": float(abs(error)), "panorama_x": 10.0, "panorama_y": 5.0,
                          "panorama_azimuth": 20.0, "panorama_value": 1.0, "aerial_x": 40.0, "aerial_y": 30.0,
                          "aerial_azimuth": 50.0, "aerial_value": 1.0, "similarity": 0.8, "map_flagged": False})
        within = float((np.abs(errors) <= 3.5).mean())
        summary.append({"overall_map": "decomposition", "method": method, "aerial_fill": "reflect",
                        "within_3_5": within, "within_10": float((np.abs(errors) <= 10).mean()),
                        "within_30": float((np.abs(errors) <= 30).mean()),
                        "median_abs_error": float(np.median(np.abs(errors))),
                        "mean_abs_error": float(np.mean(np.abs(errors))), "count": 12, "flagged": 0,
                        "chance_within_3_5": 7 / 360})
        for centre in range(-175, 181, 7):
            count = int(((errors >= centre - 3.5) & (errors < centre + 3.5)).sum())
            histogram.append({"overall_map": "decomposition", "method": method, "aerial_fill": "reflect",
                              "bin_centre": float(centre), "bin_low": centre - 3.5, "bin_high": centre + 3.5,
                              "count": count, "share": count / 12})
    recall = [{"model": "crossview.pt", "split": "val", "at": at, "k": k, "recall": r, "count": 12}
              for at, k, r in (("1", 1, 0.4), ("5", 5, 0.7), ("10", 10, 0.8), ("1%", 1, 0.4))]
    for name, rows in (("orientation_items", items), ("orientation_summary", summary),
                       ("orientation_histogram", histogram), ("crossview_recall", recall), ("errors", [])):
        store.write_table(f"{name}.parquet", name, rows)
    store.write_bytes("figures/histogram.png", _figure_png("orientation error"))
    store.write_bytes("figures/montage.png", _figure_png("montage"))
    manifest = {"kind": "orientation", "config": {"dataset": "cvusa:/data/cvusa"}, "git_commit": "1" * 40,
                "figures": ["figures/histogram.png", "figures/montage.png"], "errors": 0, "warnings": 0}
    store.write_json("manifest.json", manifest)
    headline = {f"within_3_5/{r['method']}": r["within_3_5"] for r in summary}
    return finish_run(run, manifest, dataset="cvusa:/data/cvusa", model="crossview.pt", headline=headline)


def retrieval_run(root: Path | str, dataset_root: Path) -> dict:
    """A finished interactive-retrieval run: precision@k per method and rankings over the dataset's images."""
    data = load_cub(dataset_root)
    run = start_run("retrieval", str(root))
    store = run.location
    rankings = []
    for query in data.items[:3]:
        for method, feature in (("partial_similarity", "centre"), ("overall_similarity", "whole_image")):
            for rank, gallery in enumerate([i for i in data.items if i is not query][:4], start=1):
                rankings.append({"query_id": query.image_id, "query_image": query.path, "query_label": query.label,
                                 "region_kind": "box", "box_x0": query.box[0], "box_y0": query.box[1],
                                 "box_x1": query.box[2], "box_y1": query.box[3], "method": method,
                                 "region_feature": feature, "rank": rank, "gallery_id": gallery.image_id,
                                 "gallery_image": gallery.path, "gallery_relative_path": gallery.relative_path,
                                 "gallery_label": gallery.label, "score": 1.0 - 0.1 * rank})
    evaluation = [{"benchmark": "synthetic", "method": method, "region_feature": feature, "metric": "precision",
                   "k": k, "value": value - 0.02 * k, "count": 3}
                  for method, feature, value in (("partial_similarity", "centre", 0.9),
                                                 ("overall_similarity", "whole_image", 0.7)) for k in (1, 5, 10)]
    store.write_table("retrieval_rankings.parquet", "retrieval_rankings", rankings)
    store.write_table("retrieval_eval.parquet", "retrieval_eval", evaluation)
    store.write_table("errors.parquet", "errors", [])
    manifest = {"kind": "retrieval", "config": {"dataset": f"cub:{dataset_root}"}, "git_commit": "2" * 40,
                "figures": [], "errors": 0, "warnings": 0}
    store.write_json("manifest.json", manifest)
    return finish_run(run, manifest, dataset=f"cub:{dataset_root}", model="tests.conftest:tiny",
                      headline={"precision@1/partial_similarity": 0.88})


def launched_study(folder: Path, held: int = 2) -> Path:
    """A study launched in the sandbox, with simulated answers of 60 workers and ``held`` assignments held for
    review (each with its answers), stimuli as small PNGs."""
    import cv2

    from amt.ledger import Ledger
    from tests.amt.helpers import make_ledger
    from tests.amt.test_analysis import simulate

    make_ledger(folder, budget_usd=100.0, catch_trial_rate=0.25, items=8, items_per_hit=5, assignments_per_hit=60)
    ledger = Ledger.load(folder)
    (folder / "stimuli").mkdir(exist_ok=True)
    for n, item in enumerate(ledger.items):
        for side, name in item["stimuli"].items():
            picture = np.full((60, 120, 3), (40 * n) % 255, np.uint8)
            cv2.putText(picture, f"{side}{n}", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
            cv2.imwrite(str(folder / "stimuli" / name), picture)
    responses = simulate(ledger=ledger, workers=60)
    hit_of = {item["item_id"]: item["hit_index"] for item in ledger.items}
    responses["source"] = "mturk"  # one assignment per worker and HIT, as MTurk makes them
    responses["hit_index"] = [hit_of[i] for i in responses["item_id"]]
    responses["assignment_id"] = [f"A{w}-{h}" for w, h in zip(responses["worker_hash"], responses["hit_index"],
                                                               strict=True)]
    responses.to_parquet(folder / "responses.parquet")
    assignments = sorted(set(responses["assignment_id"]))[:held]
    with Ledger.update(folder) as ledger:
        ledger.data["launches"] = [{"live": False, "hit_type_id": "TYPE1", "participated_qualification": None,
                                    "reward_cents": 50, "assignments_per_hit": 3}]
        for index, hit in enumerate(ledger.hits):
            hit.update({"hit_id": f"HIT{index:027d}", "hit_type_id": "TYPE1", "status": "launched", "live": False})
        ledger.data["review"] = {a: {"hit_id": ledger.hits[0]["hit_id"], "reason": "1 of 2 catch trials failed"}
                                 for a in assignments}
    return folder


def demo_root(root: Path, dataset_root: Path, study_folder: Path) -> dict:
    """A results root with two localization runs (the dataset's real images), an orientation run, a retrieval run,
    and an analysed study recorded in the catalog."""
    from amt.analysis import analyse_folder
    from tasks.studies import record_analysis, status

    first = localization_run(root, 24, dataset_root, seed=0, checkpoint="a" * 64)
    second = localization_run(root, 24, dataset_root, seed=1, skill_shift=0.1, checkpoint="b" * 64)
    orientation = orientation_run(root)
    retrieval = retrieval_run(root, dataset_root)
    launched_study(study_folder)
    result = analyse_folder(study_folder)
    study = record_analysis(str(study_folder), str(root), result, status(str(study_folder)))
    return {"localization": [first, second], "orientation": orientation, "retrieval": retrieval, "study": study,
            "study_folder": study_folder}


def catalog_rows(root: Path | str) -> list[dict]:
    from tasks.runs import read_catalog

    return json.loads(read_catalog(str(root)).to_json(orient="records"))


def location_of(row: dict) -> ResultsLocation:
    return ResultsLocation(row["location"])
