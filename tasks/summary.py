"""The end of a localization run: tables, figures and the manifest, from the shard files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.datasets import Dataset, ErrorRecord
from eml_core.errors import EmlError
from eml_core.localization import pair_maps
from eml_core.methods import get_method
from eml_core.models import resolve_device
from eml_core.retrieval import RECALL_KS, Pair, recall_at_k
from eml_core.sweep import PAPER_THRESHOLDS, accuracy_table, best_per_method, max_box_accuracy
from eml_core.tables import frame
from tasks.configs import LocalizationConfig
from tasks.figures import accuracy_plot, example_panel, png_bytes
from tasks.localization import cached_model, read_embeddings
from tasks.provenance import model_fingerprint, outcome, run_header, software
from tasks.runs import Run, finish_run

TABLES = ("localization_items", "localization_summary", "localization_best", "maxboxacc", "retrieval_metrics",
          "errors", "localization_maps")


def retrieval_table(model_name: str, dataset: Dataset, embeddings: dict[str, np.ndarray], splits) -> pd.DataFrame:
    rows = []
    for split in splits:
        items = [i for i in dataset.split(split) if i.image_id in embeddings]
        if len(items) < 2:
            continue
        vectors = torch.from_numpy(np.stack([embeddings[i.image_id] for i in items]))
        for k, value in recall_at_k(vectors, [i.label for i in items], RECALL_KS).items():
            rows.append({"model": model_name, "split": split, "k": k, "recall": value, "count": len(items)})
    return frame("retrieval_metrics", rows)


@task(name="summarise", cache_policy=NO_CACHE)
def summarise(config: LocalizationConfig, run: Run, dataset: Dataset, embed_outputs: list[dict], pairs: list[Pair],
              pair_errors: list[ErrorRecord], localize_outputs: list[dict], started: float,
              example_pairs: int = 4, placement: dict | None = None) -> dict:
    """The run's tables, figures and manifest (written last) in the run's own folder, from the shard cache;
    then the run is registered (``latest`` pointer, catalog row). ``placement``: where the shard tasks ran
    (:func:`tasks.cluster.gpu_tasks`), recorded in the manifest."""
    cache, store = run.cache, run.location
    items = pd.concat([cache.read_table(path) for output in localize_outputs for path in output["paths"].values()],
                      ignore_index=True) if localize_outputs else frame("localization_items", [])
    items = frame("localization_items", items.sort_values(["pair_id", "side", "method", "threshold"],
                                                          kind="stable").reset_index(drop=True))
    # Tables I/II and MaxBoxAcc over the localized splits only (default: the evaluation split, as the paper)
    splits = config.table_splits
    summary = frame("localization_summary", accuracy_table(items, PAPER_THRESHOLDS, splits) if len(items) else [])
    best = frame("localization_best", best_per_method(summary) if len(summary) else [])
    boxacc = frame("maxboxacc", max_box_accuracy(items, splits=splits) if len(items) else [])
    # the raw feature-resolution maps of every scored item, so the dashboard's gallery needs no model
    map_parts = [cache.read_table(path) for output in localize_outputs for path in output["maps_paths"].values()]
    maps = frame("localization_maps", pd.concat(map_parts, ignore_index=True).sort_values(
        ["pair_id", "side", "method"], kind="stable").reset_index(drop=True) if map_parts else [])
    embeddings = read_embeddings(cache.uri, [o["path"] for o in embed_outputs])
    retrieval = retrieval_table(config.model, dataset, embeddings, config.splits)

    error_frames = [pd.DataFrame([e.to_dict() for e in dataset.errors + pair_errors])]
    error_frames += [cache.read_table(o["errors_path"]) for o in embed_outputs + localize_outputs]
    errors = frame("errors", pd.concat([f for f in error_frames if len(f)], ignore_index=True)
                   if any(len(f) for f in error_frames) else [])

    for name, table in zip(TABLES, (items, summary, best, boxacc, retrieval, errors, maps), strict=True):
        store.write_table(f"{name}.parquet", name, table)

    figures = []
    if len(summary):
        store.write_bytes("figures/accuracy_vs_threshold.png",
                          accuracy_plot(summary, f"{dataset.name}: localization accuracy (paper grid)"))
        figures.append("figures/accuracy_vs_threshold.png")
        best_thresholds = dict(zip(best["method"], best["best_threshold"], strict=True))
        panel = _examples(config, pairs[:example_pairs], best_thresholds)
        if panel is not None:
            store.write_bytes("figures/examples.png", png_bytes(panel))
            figures.append("figures/examples.png")

    fingerprint = model_fingerprint(config.model)
    manifest = {
        "kind": "evaluate_localization",
        "run": run_header(run, cache.uri),
        "config": config.to_dict(),
        "seeds": {"pairing": config.seed, "torch": config.seed},
        **software(),
        "dataset": {"name": dataset.name, "root": dataset.root, "items": len(dataset.items),
                    "split_rule": dataset.split_rule, "fingerprint": dataset.fingerprint()},
        "protocol": {"split_rule": dataset.split_rule, "table_splits": list(splits),
                     "recall_splits": list(config.splits), "pairing": config.pairing, "sides": list(config.sides),
                     "methods": {m: get_method(m).paper_name for m in config.methods}},
        "checkpoint": {"spec": config.model, "sha256": fingerprint},
        "model": model_description(config),
        "pairs": len(pairs),
        "shards": {"embed": [o["path"] for o in embed_outputs],
                   "localize": [p for o in localize_outputs for p in o["paths"].values()]},
        "shards_computed_this_run": sum(bool(o["computed"]) for o in embed_outputs + localize_outputs),
        "execution": {"cluster": config.cluster, **(placement or {"runner": "in_process"})},
        **outcome(TABLES, errors, started, figures),
    }
    store.write_json("manifest.json", manifest)
    headline = {f"best_accuracy/{r['method']}": float(r["best_accuracy"]) for _, r in best.iterrows()}
    headline.update({f"maxboxacc@{r['iou_threshold']:g}/{r['method']}": float(r["maxboxacc"])
                     for _, r in boxacc.iterrows()})
    headline.update({f"recall@{r['k']}/{r['split']}": float(r["recall"]) for _, r in retrieval.iterrows()})
    catalog_row = finish_run(run, manifest, dataset=config.dataset, split_rule=dataset.split_rule, model=config.model,
                             checkpoint_sha256=fingerprint, headline=headline)
    return {"summary": summary, "best": best, "maxboxacc": boxacc, "retrieval": retrieval, "errors": errors,
            "manifest": manifest, "location": store.location_of(""), "run_id": run.run_id, "catalog": catalog_row}


def model_description(config: LocalizationConfig) -> dict:
    """What the tables' captions say about the model: backbone, head, embedding size, input size, pretrained,
    and the training recipe's loss and fine-tuning (when the checkpoint records them)."""
    model = cached_model(config.model, model_fingerprint(config.model), resolve_device(config.device))
    recorded = model.config
    training = recorded.get("training") if isinstance(recorded.get("training"), dict) else {}
    described = {key: recorded.get(key) for key in ("kind", "backbone", "head", "embedding_dim", "input_size",
                                                    "pretrained")}
    described.update({"loss": training.get("loss"), "fine_tune": training.get("fine_tune"),
                      "epochs": training.get("epochs")})
    return described


def _examples(config: LocalizationConfig, pairs: list[Pair], thresholds: dict) -> np.ndarray | None:
    if not pairs:
        return None
    device = resolve_device(config.device)
    model = cached_model(config.model, model_fingerprint(config.model), device)
    rows = []
    for pair in pairs:
        try:
            maps = pair_maps(model, pair.query.path, pair.retrieved.path, config.methods, device, config.precision)
        except (EmlError, RuntimeError):  # such pairs are already in the errors table; show the others
            continue
        rows.append(example_panel(pair.query, {m: maps[m]["query"][0] for m in config.methods}, thresholds))
    return np.concatenate(rows, axis=0) if rows else None


def protocol_caption(manifest: dict) -> str:
    """One paragraph saying what produced a run's Tables I/II: model, dataset, split rule and localized splits,
    pairing, sides scored, and the methods by their paper names."""
    config, protocol = manifest.get("config", {}), manifest.get("protocol", {})
    model = manifest.get("model") or {}
    architecture = (f"{model.get('backbone')}:{model.get('head')}" if model.get("backbone") else
                    str(manifest.get("checkpoint", {}).get("spec")))
    training = []
    if model.get("loss"):
        training.append(f"{model['loss']} loss")
    if model.get("fine_tune") is not None:
        training.append("fine-tuned end to end" if model["fine_tune"] else "frozen backbone, trained head")
    rule = protocol.get("split_rule") or manifest.get("dataset", {}).get("split_rule")
    rule_text = {"classes": "class-disjoint split (first half of the classes trains, the rest are unseen)",
                 "official": "the dataset's official per-image split"}.get(rule, str(rule))
    pairing = protocol.get("pairing", config.get("pairing"))
    pairing_text = {"random": f"a seeded random same-class partner (seed {config.get('seed')})",
                    "nearest": "its nearest same-class partner (cosine)"}.get(pairing, str(pairing))
    sides = protocol.get("sides", config.get("sides", []))
    sides_text = "both images of every pair" if set(sides) == {"query", "retrieved"} else "the query image only"
    methods = protocol.get("methods", {})
    return (f"Model `{architecture}` ({', '.join(training) or 'training not recorded'}; checkpoint "
            f"`{manifest.get('checkpoint', {}).get('spec')}`). Dataset `{config.get('dataset')}`, {rule_text}; "
            f"Tables I/II on the {'/'.join(protocol.get('table_splits', []))} split only. Each image paired with "
            f"{pairing_text}; scored: {sides_text}. Correct when IoU > 0.5 (largest connected component of map > t). "
            f"Methods: " + "; ".join(f"`{name}` = {paper}" for name, paper in methods.items()) + ".")


def coinciding_methods(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs of methods whose Table I rows are equal at every threshold (e.g. Grad-CAM (no norm) and
    Decomposition+Bias under a GAP head, paper Section V)."""
    if not len(summary):
        return []
    pivot = summary.pivot(index="method", columns="threshold", values="accuracy")
    names = list(pivot.index)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if np.allclose(pivot.loc[a].to_numpy(), pivot.loc[b].to_numpy(), rtol=0, atol=1e-12)]


def coincidence_notes(summary: pd.DataFrame, manifest: dict) -> list[str]:
    """A sentence per pair of identical columns, saying why when the maths says so."""
    head = str((manifest.get("model") or {}).get("head") or "")
    notes = []
    for a, b in coinciding_methods(summary):
        why = ""
        if {a, b} == {"gradcam_nonorm", "decomposition_bias"} and head.startswith("gap"):
            why = (" as the paper's Section V proves for a GAP head: Grad-CAM (no norm) is proportional to "
                   "Decomposition+Bias, so the normalised maps are the same")
        notes.append(f"`{a}` and `{b}` coincide at every threshold{why}.")
    return notes


def markdown_report(result: dict, dataset_name: str) -> str:
    """Tables I and II as markdown, with the protocol in the captions and where the results are."""
    summary, best = result["summary"], result["best"]
    manifest = result.get("manifest", {})
    caption = protocol_caption(manifest)
    lines = [f"# Localization on {dataset_name}", "", f"Results: `{result['location']}`", "",
             "## Table I: accuracy (%) per method and threshold (IoU > 0.5)", "", caption, ""]
    if len(summary):
        pivot = summary.pivot(index="method", columns="threshold", values="accuracy") * 100
        lines.append("| method | " + " | ".join(f"t={t:g}" for t in pivot.columns) + " |")
        lines.append("|---|" + "---:|" * len(pivot.columns))
        for method, row in pivot.iterrows():
            lines.append(f"| {method} | " + " | ".join(f"{v:.1f}" for v in row.values) + " |")
    lines += [""] + coincidence_notes(summary, manifest)
    lines += ["", "## Table II: best accuracy per method", "", caption, "",
              "| method | best accuracy (%) | threshold | images scored |", "|---|---:|---:|---:|"]
    for _, row in best.iterrows():
        lines.append(f"| {row['method']} | {row['best_accuracy'] * 100:.1f} | {row['best_threshold']:g} | "
                     f"{row['count']} |")
    errors = result["errors"]
    lines += ["", f"Errors: {int((errors['severity'] == 'error').sum())}, warnings: "
                  f"{int((errors['severity'] == 'warning').sum())} (see errors.parquet)"]
    return "\n".join(lines)
