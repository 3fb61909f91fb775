"""Human-study steps as Prefect tasks (thin wrappers over `amt`)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from amt.analysis import analyse_folder
from amt.build import build_study
from amt.collect import collect
from amt.gateway import Gateway, mturk_client, study_mode
from amt.hosting import stage_stimuli
from amt.ledger import Ledger
from amt.study import load_study, study_from_dict
from tasks import progress


@task(name="build-study", cache_policy=NO_CACHE)
def build(definition: str, folder: str, source: str | None = None) -> dict:
    """Build a study; ``source`` replaces the definition's source run (the demo builds from its own --out)."""
    study = load_study(definition)
    if source is not None:
        study = study_from_dict({**study.to_dict(), "source": source}, definition)
    ledger = build_study(study, folder)
    return {"folder": folder, "items": len(ledger.items), "hits": len(ledger.hits)}


@task(name="launch-study", cache_policy=NO_CACHE)
def launch(folder: str, live: bool = False, client=None, s3_client=None) -> dict:
    """Budget check, then upload, then HITs: all under the study lock (see ``Gateway.launch``)."""
    with progress.bar(len(Ledger.load(folder).hits), "creating HITs") as hits:
        gateway = Gateway(client or mturk_client(live), live=live, log=lambda message: hits.update())
        return gateway.launch(folder, stage_stimuli=stage_stimuli(s3_client))


@task(name="collect-study", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def collect_responses(folder: str, live: bool = False, client=None) -> dict:
    live = study_mode(Ledger.load(folder), live)  # collect where the study was launched
    return collect(client or mturk_client(live), folder)


@task(name="analyze-study", cache_policy=NO_CACHE)
def analyze(folder: str, include_flagged: bool = False) -> dict:
    return analyse_folder(folder, include_flagged=include_flagged)


# ---------------------------------------------------------------------------------------------
# the command line's study steps that need no flow (checks before any AWS call, the lab server, expiry)


def check_study(folder: str, live: bool | None = None) -> Ledger:
    """The study's ledger, read now (a clear error before any flow or AWS client starts); with ``live``, the
    mode must be the one the study was launched in."""
    ledger = Ledger.load(folder)
    if live is not None:
        study_mode(ledger, live)
    return ledger


def check_launch(folder: str, live: bool, dry_run: bool = False) -> dict:
    """Everything a launch needs that is known locally: a ledger in this mode, a bucket, a budget cap that
    covers the HITs, and (unless ``dry_run``) AWS credentials. Raises before any AWS call; returns the plan
    (:func:`amt.gateway.launch_plan`)."""
    from amt.gateway import launch_plan, require_credentials
    from amt.hosting import require_bucket

    ledger = check_study(folder, live)
    require_bucket(ledger)
    plan = launch_plan(ledger, live)
    if not dry_run:
        require_credentials()
    return plan


def check_aws(folder: str, live: bool) -> Ledger:
    """The ledger in this mode, and AWS credentials to reach MTurk (one line each when missing)."""
    from amt.gateway import require_credentials

    ledger = check_study(folder, live)
    require_credentials()
    return ledger


def check_analysis(folder: str) -> None:
    """A ledger and readable responses with at least one answer: checked before any flow starts."""
    from pathlib import Path

    from amt.responses import read_study_table
    from amt.study import StudyError

    check_study(folder)
    if read_study_table(Path(folder), "responses").empty:
        raise StudyError(f"{folder}: no responses yet; collect (or serve) first")


def lab_server(folder: str, port: int, participants: int):
    """A started lab server with ``participants`` new links; returns ``(server, links)``."""
    from amt.lab import LabServer

    server = LabServer(folder, port=port)
    try:
        links = server.add_participants(participants)
    except BaseException:
        server.stop()
        raise
    return server.start(), links


def expire_hits(folder: str, live: bool, delete: bool) -> dict:
    check_aws(folder, live)
    gateway = Gateway(mturk_client(live), live=live)
    expired = gateway.expire(folder)
    return {"expired": expired, "deleted": gateway.delete(folder) if delete else 0}


def reject_assignment(folder: str, assignment: str, reason: str, live: bool) -> None:
    from amt.collect import check_rejection, reject

    check_study(folder, live)
    check_rejection(assignment, reason)  # before any AWS client
    check_aws(folder, live)
    reject(mturk_client(live), folder, assignment, reason)


def approve_assignment(folder: str, assignment: str, live: bool) -> None:
    """Approve an assignment held for review (the review dashboard's action), in the study's own mode."""
    from amt.collect import approve_held

    check_aws(folder, live)
    approve_held(mturk_client(live), folder, assignment)


# ---------------------------------------------------------------------------------------------
# where a study stands, and its analysis recorded as a run in a results root's catalog


def status(folder: str) -> dict:
    """Progress, spend, lab participants (:func:`amt.status.study_status`)."""
    from amt.status import study_status

    return study_status(folder)


STUDY_TABLES = ("study_summary", "worker_patterns", "responses", "errors")


def record_analysis(folder: str, results: str, result: dict, study: dict) -> dict:
    """Copy the analysis (its tables and chart) into a run of kind ``study`` under the results root
    ``results`` and add its catalog row (dataset: the study id; model: the two methods; headline: mean score,
    share preferring the first method, workers, answers). The study folder itself is named in the manifest,
    so the dashboard can show live progress and held assignments where that folder is reachable."""
    from pathlib import Path

    from amt.responses import read_study_table
    from tasks.provenance import run_header, software
    from tasks.runs import finish_run, start_run

    run = start_run("study", results)
    store = run.location
    tables = {name: read_study_table(Path(folder), name) for name in STUDY_TABLES}
    for name, table in tables.items():
        store.write_table(f"{name}.parquet", name, table)
    if result.get("chart"):
        store.write_bytes("figures/study_summary.png", result["chart"])
    row = result["summary"].iloc[0]
    errors = tables["errors"]
    manifest = {"kind": "analyze_study", "run": run_header(run),
                "config": {"folder": str(folder), "include_flagged": bool(result.get("include_flagged")),
                           "results": results},
                "study_id": study["study_id"], "study_folder": str(Path(folder).resolve()),
                "methods": list(study["methods"]), "counts": study["counts"], "spend": study["spend"],
                **software(),
                "tables": {name: f"{name}.parquet" for name in STUDY_TABLES},
                "figures": ["figures/study_summary.png"] if result.get("chart") else [],
                "errors": int((errors["severity"] == "error").sum()),
                "warnings": int((errors["severity"] == "warning").sum())}
    store.write_json("manifest.json", manifest)
    headline = {"mean_score": float(row["mean_score"]), "prefer_first_share": float(row["prefer_first_share"]),
                "workers": int(row["workers"]), "answers": int(row["answers"]),
                "assignments_held": int(study["counts"]["assignments_held"])}
    return finish_run(run, manifest, dataset=study["study_id"], model=" vs ".join(study["methods"]),
                      headline=headline)
