"""`eml study build`: items, stimuli, HIT pages and the ledger, locally and without any AWS call.

Items come from

* ``overall_map``: a localization results run (its ``manifest.json`` names the
  dataset and checkpoint; its ``localization_items`` the pairs). The pairs are
  explained again with that checkpoint to draw both methods' overall maps.
* ``retrieval``: an interactive-retrieval run (``eml retrieve``, flow
  ``interactive_retrieval``; a run folder, or a results root whose latest
  retrieval run is used, local or S3): its ``retrieval_rankings`` (columns
  :data:`RANKINGS_COLUMNS`), one row per (query, method, rank). Gallery images are
  found under the index root the run recorded in its manifest (each path must stay
  inside it); query images are the absolute paths the run recorded.

Which method is robot A is drawn per item from the study seed and recorded.
Catch trials have a known better answer: for ``overall_map`` both robots show the
highlight of a real overall map of the pair (one of each study method, which one is
good drawn from the seed), moved whole so that the good robot's lies on the object
(inside its true box) and the bad robot's on a clearly wrong region outside it
(:func:`amt.stimuli.catch_highlights`); for ``retrieval`` they reward results
relevant to the *region*, not merely to the query image: the good robot shows
gallery images whose label is the label of the region's content (the run's
``query_label``, e.g. the class of the marked object), the bad robot the images a
ranking of that query returned *without* that label (what whole-image similarity
brings back for the rest of the query image, e.g. its other object), topped up with
other images lacking the label.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from amt.hit_page import lab_html
from amt.ledger import LEDGER_FILE, Ledger, study_lock, unique_request_token
from amt.stimuli import (
    catch_highlights,
    image_heat,
    overall_map_stimulus,
    pair_stimulus,
    retrieval_stimulus,
    save_stimulus,
)
from amt.study import Study, StudyError, one_line
from eml_core.atomic import write_bytes_atomic
from eml_core.errors import EmlError
from eml_core.region_retrieval import Region
from eml_core.results import ResultsLocation, resolve_run

RANKINGS_COLUMNS = ("query_id", "query_image", "query_label", "region_kind", "box_x0", "box_y0", "box_x1", "box_y1",
                    "method", "rank", "gallery_id", "gallery_relative_path", "gallery_label", "score")


def _item_id(study: Study, key: str) -> str:
    return "i-" + hashlib.sha256(f"{study.study_id}:{key}".encode()).hexdigest()[:12]


def _assign_sides(rng: np.random.Generator, study: Study) -> tuple[str, str]:
    return (study.methods[0], study.methods[1]) if rng.random() < 0.5 else (study.methods[1], study.methods[0])


def overall_map_items(study: Study, stimuli: Path, rng: np.random.Generator) -> list[dict]:
    from eml_core.dataset_specs import dataset_from_spec
    from eml_core.datasets import SPLIT_RULES
    from eml_core.localization import pair_maps
    from eml_core.methods import REGISTRY
    from eml_core.models import model_from_spec

    try:  # a run folder, or a folder of runs (its latest localization run); local or s3://bucket/prefix
        run = resolve_run(study.source, "localization")
    except EmlError as error:
        raise StudyError(one_line(f"{study.path}: field 'source': {error}")) from None
    manifest_path = run.location_of("manifest.json")
    for relative in ("manifest.json", "localization_items.parquet"):
        if not run.exists(relative):
            raise StudyError(f"{study.path}: field 'source': {run.location_of(relative)} missing "
                             f"(expected a localization results run)")
    unknown = [m for m in study.methods if m not in REGISTRY]
    if unknown:
        raise StudyError(f"{study.path}: field 'methods': {unknown} are not overall-map methods "
                         f"({', '.join(REGISTRY)})")
    manifest = _run_manifest(run)
    pairs = _run_table(run, "localization_items.parquet", ["pair_id", "image_id", "partner_id", "side"])
    pairs = pairs[pairs["side"] == "query"].drop_duplicates("pair_id").sort_values("pair_id")
    if len(pairs) < study.items:
        raise StudyError(f"{study.path}: field 'items': {study.items} asked for, the run has {len(pairs)} pairs")
    chosen = pairs.iloc[np.sort(rng.choice(len(pairs), size=study.items, replace=False))]
    try:
        dataset_spec, checkpoint = manifest["config"]["dataset"], manifest["checkpoint"]["spec"]
    except (KeyError, TypeError):
        dataset_spec = checkpoint = None
    if not isinstance(dataset_spec, str) or not isinstance(checkpoint, str):
        raise StudyError(f"{manifest_path}: no config.dataset / checkpoint.spec (not a localization manifest)")
    # the run's split rule (a folder CSV read by the class rule may have no split column at all)
    recorded = manifest.get("dataset") if isinstance(manifest, dict) else None
    split_rule = recorded.get("split_rule") if isinstance(recorded, dict) else None
    if split_rule is not None and split_rule not in SPLIT_RULES:
        raise StudyError(f"{manifest_path}: dataset.split_rule must be one of {', '.join(SPLIT_RULES)}, "
                         f"got {split_rule!r}")
    dataset = dataset_from_spec(dataset_spec, split_rule)
    by_id = {item.image_id: item for item in dataset.items}
    missing = sorted({i for pair in chosen.itertuples() for i in (pair.image_id, pair.partner_id)} - set(by_id))
    if missing:
        raise StudyError(f"{manifest_path}: images {missing[:5]} of the run are not in dataset {dataset_spec} "
                         f"(moved or changed since the run?)")
    # the manifest is data: a factory it names runs only if the user trusts it
    model = model_from_spec(checkpoint, from_file=str(manifest_path))
    items = []
    for row in chosen.itertuples():
        query, partner = by_id[row.image_id], by_id[row.partner_id]
        maps = pair_maps(model, query.path, partner.path, study.methods)
        method_a, method_b = _assign_sides(rng, study)
        files = {side: save_stimulus(stimuli, overall_map_stimulus(query.path, partner.path, maps[m]["query"][0],
                                                                   maps[m]["retrieved"][0], study.highlight_fraction))
                 for side, m in (("A", method_a), ("B", method_b))}
        items.append({"item_id": _item_id(study, row.pair_id), "source_ref": row.pair_id, "is_catch": False,
                      "method_a": method_a, "method_b": method_b, "expected": None, "stimuli": files})
    items += overall_map_catch_items(study, stimuli, rng, model, by_id,
                                     [chosen, pairs[~pairs["pair_id"].isin(chosen["pair_id"])]])
    return items


def overall_map_catch_items(study: Study, stimuli: Path, rng: np.random.Generator, model, by_id: dict,
                            candidates: list[pd.DataFrame]) -> list[dict]:
    """``study.catch_items`` catch trials from real maps (:func:`amt.stimuli.catch_highlights`): pairs tried in
    order (the study's items first, then the run's other pairs), each used once; a pair whose images leave no
    room outside the object, or whose maps have too little to highlight, is passed over."""
    from eml_core.localization import pair_maps

    rows = [row for table in candidates for row in table.itertuples()]
    items: list[dict] = []
    for row in rows:
        if len(items) == study.catch_items:
            break
        query, partner = by_id.get(row.image_id), by_id.get(row.partner_id)
        if query is None or partner is None or query.box is None or partner.box is None:
            continue
        good_method, bad_method = _assign_sides(rng, study)
        maps = pair_maps(model, query.path, partner.path, study.methods)
        query_highlights, partner_highlights = (
            catch_highlights(image_heat(item.path, maps[good_method][side][0]),
                             image_heat(item.path, maps[bad_method][side][0]), item.box, study.highlight_fraction)
            for item, side in ((query, "query"), (partner, "retrieved")))
        if query_highlights is None or partner_highlights is None:
            continue
        good, bad = (save_stimulus(stimuli, pair_stimulus(query.path, partner.path, query_highlights[which],
                                                          partner_highlights[which])) for which in (0, 1))
        good_side = "A" if rng.random() < 0.5 else "B"
        items.append(_catch_item(study, f"catch-{len(items)}", good_side, good, bad, source=row.pair_id))
    if len(items) < study.catch_items:
        raise StudyError(f"{study.path}: field 'catch_trial_rate': {study.catch_items} catch trials asked for, only "
                         f"{len(items)} pairs of the run leave room for a highlight off the object; lower "
                         f"catch_trial_rate or use a run with more pairs")
    return items


def _catch_item(study: Study, key: str, good_side: str, good: str, bad: str, source: str | None = None) -> dict:
    files = {"A": good, "B": bad} if good_side == "A" else {"A": bad, "B": good}
    return {"item_id": _item_id(study, key), "source_ref": f"{key}:{source}" if source else key, "is_catch": True,
            "method_a": None, "method_b": None, "expected": good_side, "stimuli": files}


def _run_manifest(run) -> dict:
    """A source run's manifest; StudyError naming the file when it cannot be read."""
    try:
        return run.read_json("manifest.json")
    except (EmlError, OSError, RecursionError) as error:
        raise StudyError(one_line(f"{run.location_of('manifest.json')}: unreadable manifest ({error})")) from None


def _run_table(run: ResultsLocation, relative: str, columns: list[str]) -> pd.DataFrame:
    """The columns a study needs of a run's table (local or S3); StudyError naming the file otherwise."""
    location = run.location_of(relative)
    try:
        table = run.read_table(relative)
    except (EmlError, OSError) as error:
        raise StudyError(one_line(f"{location}: not a readable Parquet table ({error})"[:400])) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise StudyError(f"{location}: lacks column(s) {', '.join(missing)}")
    return table[columns]


def _gallery_root(run: ResultsLocation, manifest: dict, probe: str | None) -> Path:
    """The folder the run's gallery images are under: the index root the run recorded, else (moved since) the
    root its index resolves now. StudyError naming both when neither holds the images."""
    from eml_core.gallery_index import GalleryIndex

    where = run.location_of("manifest.json")
    index = manifest.get("index") if isinstance(manifest, dict) else None
    if not isinstance(index, dict) or not isinstance(index.get("root"), str):
        raise StudyError(f"{where}: no index.root (not the manifest of a retrieval run)")
    recorded = Path(index["root"])
    if probe is None or (recorded / probe).is_file():
        return recorded
    location = index.get("location")
    if isinstance(location, str):
        try:
            now = GalleryIndex.open(location).root_folder()
        except (EmlError, OSError):
            now = None
        if now is not None and (now / probe).is_file():
            return now
    raise StudyError(f"{where}: the gallery images are not under the index root the run recorded ({recorded}; "
                     f"e.g. {probe} is missing): were they moved?")


def read_rankings(study: Study) -> pd.DataFrame:
    """The ``retrieval_rankings`` of the run the study's ``source`` names, image paths resolved."""
    from eml_core.gallery_index import relative_to_root

    try:  # a run folder, or a folder of runs (its latest retrieval run); local or s3://bucket/prefix
        run = resolve_run(study.source, "retrieval")
    except EmlError as error:
        raise StudyError(one_line(f"{study.path}: field 'source': {error}")) from None
    for relative in ("manifest.json", "retrieval_rankings.parquet"):
        if not run.exists(relative):
            raise StudyError(f"{study.path}: field 'source': {run.location_of(relative)} missing (expected a "
                             f"retrieval run of `eml retrieve`)")
    manifest = _run_manifest(run)
    table = _run_table(run, "retrieval_rankings.parquet", list(RANKINGS_COLUMNS))
    where = run.location_of("retrieval_rankings.parquet")
    if not all(isinstance(p, str) and p for column in ("query_image", "gallery_relative_path") for p in table[column]):
        raise StudyError(f"{where}: columns query_image and gallery_relative_path must hold image paths (text)")
    if not table["region_kind"].isin(["box", "point"]).all():
        raise StudyError(f"{where}: column region_kind must be 'box' or 'point'")
    root = _gallery_root(run, manifest, table["gallery_relative_path"].iloc[0] if len(table) else None)
    paths = []
    for relative in table["gallery_relative_path"]:
        path = root / relative
        if relative_to_root(str(path), root) is None:  # a table is data: it never reaches outside the root
            raise StudyError(f"{where}: gallery path {relative!r} is not inside the index root {root}")
        paths.append(str(path))
    table["gallery_image"] = paths
    missing = sorted({p for p in table["query_image"] if not Path(p).is_file()})
    if missing:
        raise StudyError(f"{where}: query image {missing[0]} does not exist (the run records absolute paths; "
                         f"moved since?)")
    return table


def _region(row) -> Region:
    return Region(row.region_kind, float(row.box_x0), float(row.box_y0), float(row.box_x1), float(row.box_y1))


def retrieval_items(study: Study, stimuli: Path, rng: np.random.Generator) -> list[dict]:
    table = read_rankings(study)
    available = sorted(set(table["method"]))
    unknown = [m for m in study.methods if m not in available]
    if unknown:
        raise StudyError(f"{study.path}: field 'methods': {', '.join(unknown)} not in the run {study.source} "
                         f"(it ranked by {', '.join(available)})")
    rankings: dict = {}
    for (query_id, method), group in table.groupby(["query_id", "method"]):
        rankings.setdefault(query_id, {})[method] = group.sort_values("rank")
    usable = sorted(q for q, by_method in rankings.items()
                    if all(m in by_method and len(by_method[m]) >= study.top_k for m in study.methods))
    if len(usable) < study.items:
        raise StudyError(f"{study.path}: field 'items': {study.items} asked for, {len(usable)} queries of "
                         f"{study.source} have top-{study.top_k} rankings for both methods")
    chosen = [usable[i] for i in np.sort(rng.choice(len(usable), size=study.items, replace=False))]
    items = []
    for query_id in chosen:
        method_a, method_b = _assign_sides(rng, study)
        files = {}
        for side, method in (("A", method_a), ("B", method_b)):
            ranked = rankings[query_id][method].head(study.top_k)
            first = ranked.iloc[0]
            files[side] = save_stimulus(stimuli, retrieval_stimulus(first.query_image, _region(first),
                                                                    list(ranked.gallery_image)))
        items.append({"item_id": _item_id(study, f"q-{query_id}"), "source_ref": str(query_id), "is_catch": False,
                      "method_a": method_a, "method_b": method_b, "expected": None, "stimuli": files})
    items += retrieval_catch_items(study, stimuli, rng, table, rankings, chosen)
    return items


def region_catch_pools(table: pd.DataFrame, query_rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(good, bad)`` gallery images for a catch trial on one query.

    good: images whose label is the label of the region's content (``query_label``), those the query's own
    rankings returned first; bad: images the query's rankings returned *without* that label, best rank first
    (what similarity to the rest of the query image brings back), then any other image without it."""
    label = query_rows["query_label"].iloc[0]
    if pd.isna(label):
        return [], []
    ranked = query_rows.sort_values(["rank", "method"], kind="stable")
    gallery = table.drop_duplicates("gallery_relative_path")
    own = os.path.realpath(query_rows["query_image"].iloc[0])  # the query itself is never a result
    gallery = gallery[[os.path.realpath(p) != own for p in gallery["gallery_image"]]]
    labels = dict(zip(gallery["gallery_image"], gallery["gallery_label"], strict=True))
    relevant = {p for p, g in labels.items() if not pd.isna(g) and g == label}
    seen = list(dict.fromkeys(ranked["gallery_image"]))
    good = [p for p in seen if p in relevant] + sorted(relevant - set(seen))
    bad = [p for p in seen if p not in relevant] + sorted(set(labels) - relevant - set(seen))
    return good, bad


def retrieval_catch_items(study: Study, stimuli: Path, rng: np.random.Generator, table: pd.DataFrame,
                          rankings: dict, chosen: list) -> list[dict]:
    if not study.catch_items:
        return []
    candidates = []
    for query_id in chosen:
        rows = pd.concat(list(rankings[query_id].values()))
        good, bad = region_catch_pools(table, rows)
        if len(good) >= study.top_k and len(bad) >= study.top_k:
            candidates.append((query_id, rows, good, bad))
    if not candidates:
        raise StudyError(f"{study.source}: no query can make a catch trial: it needs a query_label (the label of "
                         f"the region's content) and {study.top_k} gallery images with that label and {study.top_k} "
                         f"without among the run's rankings (or set catch_trial_rate: 0)")
    items = []
    for n in range(study.catch_items):
        query_id, rows, good, bad = candidates[n % len(candidates)]
        first = rows.iloc[0]
        region = _region(first)
        good_file = save_stimulus(stimuli, retrieval_stimulus(first.query_image, region, good[:study.top_k]))
        bad_file = save_stimulus(stimuli, retrieval_stimulus(first.query_image, region, bad[:study.top_k]))
        items.append(_catch_item(study, f"catch-{n}", "A" if rng.random() < 0.5 else "B", good_file, bad_file))
    return items


def refuse_rebuild(out: Path) -> None:
    """A folder that holds more than a build is never rebuilt: a new build gets new HIT tokens, so a
    relaunch would pay for every HIT again (and orphan those MTurk already has); answers would point at
    items that no longer exist; lab participants would lose their links."""
    advice = "build into a new folder (e.g. --out {}-v2)".format(out.name or "study")
    if (out / "responses.parquet").exists():
        raise StudyError(f"{out}: holds responses (responses.parquet); refusing to rebuild it: {advice}")
    if not (out / LEDGER_FILE).exists():
        return
    try:
        existing = Ledger.load(out)
    except StudyError as error:
        raise StudyError(f"{out}: refusing to rebuild a folder whose ledger cannot be checked ({error}); "
                         f"{advice}") from None
    activity = existing.has_activity()
    if activity:
        raise StudyError(f"{out}: study {existing.study_id} holds {', '.join(activity)}; refusing to rebuild it: "
                         f"{advice}")


def build_study(study: Study, out: str | Path) -> Ledger:
    """Render everything a study needs into ``out``; returns the saved ledger. Makes no AWS call.

    Refuses a folder with launches, HIT ids, lab tokens or responses (:func:`refuse_rebuild`); the check and
    the build hold the study lock, so a launch or lab server cannot slip in between.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out):
        refuse_rebuild(out)
        rng = np.random.default_rng(study.seed)
        stimuli = out / "stimuli"
        items = (overall_map_items if study.kind == "overall_map" else retrieval_items)(study, stimuli, rng)
        order = rng.permutation(len(items))  # catch trials mixed in among the real items
        ledger = Ledger.create(out, study.to_dict())
        for slot, index in enumerate(order):
            item = dict(items[index])
            item["hit_index"], item["position"] = divmod(slot, study.items_per_hit)
            ledger.items.append(item)
        pages = out / "hits"
        pages.mkdir(parents=True, exist_ok=True)
        for stale in pages.glob("hit-*.html"):  # an earlier build's pages must not be reviewed by mistake
            stale.unlink()
        for index in range(study.hits):
            hit_items = ledger.items_of_hit(index)
            page = lab_html(study, hit_items, lambda name: f"../stimuli/{name}", action="#",
                            progress=f"HIT {index + 1}")
            write_bytes_atomic(pages / f"hit-{index:03d}.html", page.encode())
            ledger.hits.append({"index": index,
                                "unique_request_token": unique_request_token(study.study_id, ledger.build_id, index),
                                "annotation": f"{study.study_id}:{ledger.build_id}:{index}",
                                "hit_id": None, "status": "built", "items": [i["item_id"] for i in hit_items]})
        ledger.save()
    return ledger
