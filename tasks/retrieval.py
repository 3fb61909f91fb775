"""Interactive retrieval (paper Section VII-B) as Prefect tasks: a gallery embedded once into an index, shards of
region queries ranked against it, and a retrieval run written (rankings, evaluation, montages, manifest).

* **Index builds** (:func:`open_index` ... :func:`commit_parts`): the images an index does not hold yet are
  embedded shard by shard (GPU tasks, in parallel; each writes its part files) and committed by one writer
  every ``commit_every`` shards, so a crash loses at most one wave of shards and a rerun embeds only what is
  still missing. Appending the same images again embeds nothing.
* **Retrieval runs** (:func:`prepare_retrieval` ... :func:`write_retrieval_run`): the model is the index's own
  (its fingerprint is checked before any query runs); each shard of queries costs its backbone passes and one
  matrix-vector product per method (:func:`eml_core.region_retrieval.rank_queries`), and its rankings are
  cached in the results location under a content key (model, index contents, queries, methods, k, code), like
  the localization shards.

Models and indexes are loaded once per worker process. A model named by the index header (not by the user) is a
spec read from a file: a factory it names runs only when trusted (:func:`eml_core.models.model_from_spec`).
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from eml_core.datasets import Dataset, ErrorRecord, Item
from eml_core.errors import EmlError
from eml_core.gallery_index import HEADER, GalleryIndex, GalleryIndexError, embed_gallery_shard
from eml_core.models import model_from_spec, resolve_device
from eml_core.region_retrieval import RETRIEVAL_METHODS, Region, RegionQuery, montage, png_bytes
from eml_core.results import ResultsLocation
from eml_core.retrieval_benchmark import PRECISION_KS
from eml_core.tables import frame
from tasks.configs import IndexBuildConfig, RetrievalConfig
from tasks.provenance import code_version, content_key, file_stamp, model_fingerprint, outcome, run_header, software
from tasks.runs import Run, finish_run
from tasks.shard_cache import ShardCache

POINT_METHODS = tuple(name for name, method in RETRIEVAL_METHODS.items() if not method.needs_box)
RUN_TABLES = ("retrieval_rankings", "retrieval_query_eval", "retrieval_eval", "errors")


def _errors_frame(errors: list[ErrorRecord] | list[dict]) -> pd.DataFrame:
    rows = [e.to_dict() if isinstance(e, ErrorRecord) else e for e in errors]
    return frame("errors", pd.DataFrame(rows, columns=list(ErrorRecord.__dataclass_fields__)) if rows else [])


def absolute_spec(spec: str) -> str:
    """A checkpoint path made absolute (an index records how to find its model from anywhere); other specs as
    they are."""
    return str(Path(spec).resolve()) if Path(spec).is_file() else spec


@lru_cache(maxsize=4)
def _model(spec: str, fingerprint: str, device: str, from_file: str | None):
    return model_from_spec(spec, from_file=from_file).to(device).eval()


def load_model(spec: str, device: str, from_file: str | None = None):
    """One model per (spec, content, device) per process; ``from_file`` names the file the spec was read from."""
    return _model(spec, model_fingerprint(spec), device, from_file)


def parts_key(index: GalleryIndex) -> str:
    """What the index holds (its committed parts, their hashes): part of every cache key of rankings."""
    return content_key(index.header["model"]["fingerprint"], index.header["similarity"], index.header["parts"])


@lru_cache(maxsize=2)
def _index(location: str, key: str) -> GalleryIndex:
    return GalleryIndex.open(location)


def opened_index(location: str) -> GalleryIndex:
    """The index at ``location``, loaded once per process for as long as its committed parts are the same."""
    location = location if location.startswith("s3://") else os.path.abspath(location)  # not relative to a cwd
    header = GalleryIndex.open(location)  # the header alone: parts are read on first use
    return _index(location, parts_key(header))


# ---------------------------------------------------------------------------------------------
# index builds


def check_index_build(config: IndexBuildConfig) -> None:
    """Before a build starts: an index already at ``out`` must have been built with this model and similarity
    (:class:`~eml_core.gallery_index.IndexModelMismatchError` otherwise, naming both models)."""
    store = ResultsLocation(config.out)
    if not store.exists(HEADER):
        return
    index = GalleryIndex.open(store)
    index.check_model(load_model(config.model, "cpu"))
    if index.similarity != config.similarity:
        raise GalleryIndexError(f"{store.location_of(HEADER)}: the index ranks by {index.similarity} similarity, not "
                                f"{config.similarity}")


def gallery_items(data: Dataset, splits: tuple[str, ...] | None) -> tuple[list[Item], list[ErrorRecord]]:
    """The dataset's items of ``splits`` (all when None); a split the dataset does not have is an error row."""
    if splits is None:
        return list(data.items), []
    present = {item.split for item in data.items}
    errors = [ErrorRecord("index", None, data.root, None, f"split {split!r} is not in {data.name} (it has "
                                                          f"{', '.join(sorted(present)) or 'no items'})")
              for split in splits if split not in present]
    return [item for item in data.items if item.split in splits], errors


@task(name="open-index", cache_policy=NO_CACHE)
def open_index(location: str, model_spec: str, root: str, similarity: str, dataset: str | None) -> dict:
    """Create the index (or open an existing one built with the same model, root and similarity)."""
    model = load_model(model_spec, "cpu")
    index = GalleryIndex.create(location, model, root, similarity, dataset, model_spec=absolute_spec(model_spec))
    return {"location": index.location.uri, "count": len(index), "root": index.header["root"],
            "fingerprint": index.fingerprint, "similarity": index.similarity}


@task(name="missing-gallery-items", cache_policy=NO_CACHE)
def missing_gallery_items(location: str, items: list[Item]) -> tuple[list[Item], list[ErrorRecord]]:
    """The items whose image the index does not hold yet (by path under its root)."""
    return GalleryIndex.open(location).missing_items(items)


@task(name="embed-gallery-shard", tags=["gpu"], cache_policy=NO_CACHE)
def embed_gallery_part(location: str, model_spec: str, items: list[Item], root: str, device: str = "auto",
                       batch_size: int = 32) -> dict:
    """Embed one shard of gallery images and write its part files (not yet visible: :func:`commit_parts`)."""
    device = resolve_device(device)
    part, errors = embed_gallery_shard(load_model(model_spec, device), items, root, device, batch_size)
    record = GalleryIndex.open(location).write_part(part)
    return {"record": record, "errors": errors}


@task(name="commit-index", cache_policy=NO_CACHE)
def commit_parts(location: str, records: list[dict]) -> int:
    """Make written parts part of the index (one writer); returns the number of images added."""
    return GalleryIndex.open(location).commit(records)


@task(name="finish-index-build", cache_policy=NO_CACHE)
def finish_index_build(config: IndexBuildConfig, build_id: str, data: Dataset, items: list[Item], added: int,
                       errors: list[ErrorRecord], started: float) -> dict:
    """The build's record in ``<index>/builds/<build id>/``: ``errors.parquet`` and ``manifest.json`` (last)."""
    index = GalleryIndex.open(config.out)
    build = index.location.child(f"builds/{build_id}")
    table = _errors_frame(data.errors + errors)
    build.write_table("errors.parquet", "errors", table)
    manifest = {
        "kind": "index_build", "build_id": build_id, "config": config.to_dict(), **software(),
        "dataset": {"spec": config.gallery, "name": data.name, "root": data.root, "items": len(data.items),
                    "fingerprint": data.fingerprint()},
        "model": {"spec": absolute_spec(config.model), "fingerprint": index.fingerprint,
                  "summary": index.header["model"].get("summary")},
        "gallery_items": len(items), "added": added, "count": len(index),
        "errors": int((table["severity"] == "error").sum()), "warnings": int((table["severity"] == "warning").sum()),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    build.write_json("manifest.json", manifest)
    return {"index": index.location.uri, "count": len(index), "added": added, "gallery_items": len(items),
            "errors": table, "build": build.uri, "manifest": manifest}


# ---------------------------------------------------------------------------------------------
# retrieval runs


def index_model_spec(index: GalleryIndex, given: str | None) -> tuple[str, str | None]:
    """``(spec, from_file)``: the user's ``--model``, else the spec the index header records (read from a file,
    so a factory it names must be trusted)."""
    if given:
        return given, None
    spec = index.header["model"].get("spec")
    if not isinstance(spec, str) or not spec.strip():
        raise GalleryIndexError(f"{index.location.location_of(HEADER)}: the index does not record its model; give "
                                f"the model it was built with (--model)")
    return spec, index.location.location_of(HEADER)


def check_retrieval(config: RetrievalConfig) -> dict:
    """Open the index, load its model and check the fingerprint (one-line errors before any query runs); returns
    what the run records about the index."""
    index = opened_index(config.index)
    spec, from_file = index_model_spec(index, config.model)
    try:
        model = load_model(spec, "cpu", from_file)
    except EmlError as error:
        if config.model:
            raise
        raise GalleryIndexError(f"{index.location.location_of(HEADER)}: cannot load the model the index records "
                                f"({error}); give it with --model") from None
    index.check_model(model)
    if len(index) == 0:
        raise GalleryIndexError(f"{index.location.location_of(HEADER)}: the index holds no images yet")
    root = index.root_folder(config.root)
    return {"location": index.location.uri, "root": str(root), "recorded_root": index.header["root"],
            "count": len(index), "similarity": index.similarity, "fingerprint": index.fingerprint,
            "summary": index.header["model"].get("summary"), "model": spec, "model_from_file": from_file,
            "dataset": index.header.get("dataset") or "", "parts_key": parts_key(index)}


@task(name="prepare-retrieval", cache_policy=NO_CACHE)
def prepare_retrieval(config: RetrievalConfig) -> dict:
    return check_retrieval(config)


@task(name="read-queries", cache_policy=NO_CACHE)
def load_queries(config: RetrievalConfig) -> tuple[list[RegionQuery], list[ErrorRecord]]:
    """The run's queries: the rows of its query file, or its one image with a box or a point."""
    if config.queries is not None:
        from eml_core.retrieval_queries import read_queries

        return read_queries(config.queries)
    assert config.query is not None
    region = Region.box(*config.box) if config.box is not None else Region.point(*config.point)  # type: ignore[misc]
    return [RegionQuery(Path(config.query).stem or "query", os.path.abspath(config.query), region, config.label)], []


def methods_for(config: RetrievalConfig, region_kind: str) -> tuple[str, ...]:
    """The methods asked for, or (none asked) every method that applies to a region of that kind."""
    if config.methods is not None:
        return config.methods
    return tuple(RETRIEVAL_METHODS) if region_kind == "box" else POINT_METHODS


def query_signature(query: RegionQuery) -> tuple:
    """What decides a query's rankings: its id, file (path, size, modification time), region, label, exclusions."""
    r = query.region
    return (query.query_id, query.image, file_stamp(query.image), r.kind, r.x0, r.y0, r.x1, r.y1, query.label,
            list(query.exclude_gallery_ids))


def eval_ks(k: int) -> tuple[int, ...]:
    return tuple(sorted(set(PRECISION_KS) | {k}))


@task(name="rank-query-shard", tags=["gpu"], cache_policy=NO_CACHE)
def rank_shard(out: str, config: RetrievalConfig, info: dict, queries: list[RegionQuery], number: int) -> dict:
    """Rankings (top k) and per-query scores by label of one shard of queries -> shard files in the cache;
    skipped when they are already there, whole."""
    from eml_core.region_retrieval import query_vectors, rankings_from_vectors
    from eml_core.retrieval_benchmark import label_query_eval

    store = ResultsLocation(out)
    key = content_key("retrieve", info["fingerprint"], info["parts_key"], code_version(), info["root"],
                      [query_signature(q) for q in queries], list(config.methods or ()), config.k)
    paths = {"retrieval_rankings": f"shards/rankings/shard-{number:04d}-{key}.parquet",
             "retrieval_query_eval": f"shards/query_eval/shard-{number:04d}-{key}.parquet",
             "errors": f"shards/errors/retrieve-{number:04d}-{key}.parquet"}
    cache = ShardCache(store, "retrieve")
    if all([cache.usable(path, name) for name, path in paths.items()]):  # every file checked, repairs noted
        return {"paths": paths, "computed": False}
    device = resolve_device(config.device)
    index = opened_index(info["location"])
    model = load_model(info["model"], device, info["model_from_file"])
    index.check_model(model)  # on the worker too: the spec it loaded must still be the index's model
    vectors, errors = [], []
    for kind in ("box", "point"):  # each region kind with its own methods (all that apply, unless named)
        group = [q for q in queries if q.region.kind == kind]
        if group:
            found, problems = query_vectors(model, group, methods_for(config, kind), index.similarity, device,
                                            config.batch_size)
            vectors += found
            errors += problems
    order = {q.query_id: n for n, q in enumerate(queries)}
    vectors.sort(key=lambda qv: order[qv.query.query_id])
    methods = tuple(RETRIEVAL_METHODS)
    rows = rankings_from_vectors(index, vectors, methods, config.k, device, info["root"])
    scores, score_errors = label_query_eval(index, vectors, methods, eval_ks(config.k), device, info["root"])
    store.write_table(paths["errors"], "errors", _errors_frame(errors + score_errors + cache.repairs))
    store.write_table(paths["retrieval_query_eval"], "retrieval_query_eval", scores)
    store.write_table(paths["retrieval_rankings"], "retrieval_rankings", rows)
    return {"paths": paths, "computed": True}


def montage_name(number: int, query_id: str) -> str:
    """``montages/NNNN_<query id, file-name safe>.png``: unique by the number, readable by the id."""
    return f"montages/{number:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', query_id)[:60]}.png"


def write_montages(config: RetrievalConfig, info: dict, store: ResultsLocation, rankings: pd.DataFrame,
                   queries: list[RegionQuery]) -> tuple[dict[str, str], list[ErrorRecord]]:
    """The paper's layout per query (query and region, then one row per method of its top ``montage_k``), for the
    first ``config.montages`` queries that were ranked; with ``point_maps``, each partial method's images carry the
    region's point-specific map (Fig. 13)."""
    from eml_core.region_retrieval import heatmap_for, region_point_specific_maps

    written: dict[str, str] = {}
    errors: list[ErrorRecord] = []
    ranked = set(rankings["query_id"])
    chosen = [(n, q) for n, q in enumerate(queries, start=1) if q.query_id in ranked][:config.montages]
    model = load_model(info["model"], resolve_device(config.device), info["model_from_file"]) \
        if config.point_maps and chosen else None
    for number, query in chosen:
        table = rankings[rankings["query_id"] == query.query_id]
        rows: list[tuple[str | None, list[str]]] = []
        heatmaps: list[list[np.ndarray | None]] = []
        try:
            for method in dict.fromkeys(table["method"]):
                paths = list(table[table["method"] == method].sort_values("rank")["gallery_image"][:config.montage_k])
                rows.append((method, paths))
                feature = RETRIEVAL_METHODS[method].region_feature
                if model is not None and feature in ("centre", "box_mean"):
                    maps = region_point_specific_maps(model, query, paths, feature, info["similarity"],
                                                      resolve_device(config.device))
                    heatmaps.append(list(map(heatmap_for, maps)))
                else:
                    heatmaps.append([None] * len(paths))
            image = montage(query.image, query.region, rows, heatmaps if model is not None else None)
            relative = montage_name(number, query.query_id)
            store.write_bytes(relative, png_bytes(image))
            written[query.query_id] = relative
        except EmlError as error:  # an image unreadable since it was ranked: that montage is left out, noted
            errors.append(ErrorRecord("montage", query.query_id, query.image, None, f"{error}; montage left out"))
    return written, errors


@task(name="write-retrieval-run", cache_policy=NO_CACHE)
def write_retrieval_run(config: RetrievalConfig, run: Run, info: dict, queries: list[RegionQuery],
                        query_errors: list[ErrorRecord], shard_outputs: list[dict], started: float) -> dict:
    """The run's tables, montages and manifest (last), then its catalog row and ``latest`` pointer."""
    from eml_core.retrieval_benchmark import eval_from_query_rows

    cache, store = run.cache, run.location
    parts = {name: [cache.read_table(o["paths"][name], name) for o in shard_outputs] for name in RUN_TABLES[:2]}
    order = {q.query_id: n for n, q in enumerate(queries)}
    method_order = {m: n for n, m in enumerate(RETRIEVAL_METHODS)}

    def sorted_table(name: str, columns: list[str]) -> pd.DataFrame:
        tables = [t for t in parts[name] if len(t)]
        if not tables:
            return frame(name, [])
        table = pd.concat(tables, ignore_index=True)
        keys = table.assign(_q=table["query_id"].map(order), _m=table["method"].map(method_order))
        return frame(name, keys.sort_values(["_q", "_m", *columns], kind="stable")
                     .drop(columns=["_q", "_m"]).reset_index(drop=True))

    rankings = sorted_table("retrieval_rankings", ["rank"])
    query_eval = sorted_table("retrieval_query_eval", ["metric", "k"])
    evals = frame("retrieval_eval", eval_from_query_rows(query_eval.to_dict("records")))
    montages, montage_errors = write_montages(config, info, store, rankings, queries)
    shard_errors = [cache.read_table(o["paths"]["errors"], "errors") for o in shard_outputs]
    errors = _errors_frame(query_errors + montage_errors)
    errors = frame("errors", pd.concat([errors, *[t for t in shard_errors if len(t)]], ignore_index=True))
    for name, table in zip(RUN_TABLES, (rankings, query_eval, evals, errors), strict=True):
        store.write_table(f"{name}.parquet", name, table)

    manifest = {
        "kind": "interactive_retrieval",
        "run": run_header(run, cache.uri),
        "config": config.to_dict(), **software(),
        "index": {key: info[key] for key in ("location", "root", "recorded_root", "count", "similarity",
                                             "fingerprint", "summary", "dataset")},
        "checkpoint": {"spec": info["model"], "sha256": info["fingerprint"]},
        "queries": {"file": os.path.abspath(config.queries) if config.queries else None, "given": len(queries),
                    "ranked": int(rankings["query_id"].nunique()) if len(rankings) else 0,
                    "scored_by_label": int(query_eval["query_id"].nunique()) if len(query_eval) else 0},
        "shards": [o["paths"]["retrieval_rankings"] for o in shard_outputs],
        "shards_computed_this_run": sum(bool(o["computed"]) for o in shard_outputs),
        "montages": montages,
        **outcome(RUN_TABLES, errors, started),
    }
    store.write_json("manifest.json", manifest)
    headline = headline_of(evals)
    catalog_row = finish_run(run, manifest, dataset=info["dataset"], model=info["model"],
                             checkpoint_sha256=info["fingerprint"], headline=headline)
    return {"rankings": rankings, "query_eval": query_eval, "eval": evals, "errors": errors, "montages": montages,
            "manifest": manifest, "location": store.location_of(""), "run_id": run.run_id, "catalog": catalog_row}


def headline_of(evals: pd.DataFrame) -> dict:
    """``map/<method>`` and ``precision@k/<method>`` of a ``retrieval_eval`` table (a run's catalog headline)."""
    return {(f"map/{r['method']}" if r["metric"] == "map" else f"{r['metric']}@{int(r['k'])}/{r['method']}"):
            float(r["value"]) for _, r in evals.iterrows()}


def ranking_text(rankings: pd.DataFrame, query_id: str, montage: str | None) -> str:
    """One query's rankings as plain text, method by method (what ``eml retrieve`` prints)."""
    table = rankings[rankings["query_id"] == query_id]
    if table.empty:
        return f"{query_id}: no ranking (see the run's errors table)"
    first = table.iloc[0]
    region = (f"point ({first['box_x0']:g}, {first['box_y0']:g})" if first["region_kind"] == "point" else
              f"box ({first['box_x0']:g}, {first['box_y0']:g}, {first['box_x1']:g}, {first['box_y1']:g})")
    lines = [f"query {query_id}: {first['query_image']}, {region}"]
    for method in dict.fromkeys(table["method"]):
        lines.append(f"  {method} ({RETRIEVAL_METHODS[method].region_feature}):")
        for _, row in table[table["method"] == method].iterrows():
            lines.append(f"    {int(row['rank']):3d}. {row['score']:+.4f}  {row['gallery_id']}  "
                         f"(label {row['gallery_label']})  {row['gallery_image']}")
    if montage:
        lines.append(f"  montage: {montage}")
    return "\n".join(lines)


def artifact_rows(table: pd.DataFrame) -> list[dict]:
    """A table's rows for a Prefect table artifact (null cells as None, which JSON can hold)."""
    return table.astype(object).where(table.notna(), None).to_dict("records")
