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
def analyze(folder: str) -> dict:
    return analyse_folder(folder)


# ---------------------------------------------------------------------------------------------
# the command line's study steps that need no flow (checks before any AWS call, the lab server, expiry)


def check_study(folder: str, live: bool | None = None) -> Ledger:
    """The study's ledger, read now (a clear error before any flow or AWS client starts); with ``live``, the
    mode must be the one the study was launched in."""
    ledger = Ledger.load(folder)
    if live is not None:
        study_mode(ledger, live)
    return ledger


def check_launch(folder: str, live: bool) -> None:
    """Everything a launch needs that is known locally: a ledger in this mode, a bucket, a budget cap that
    covers the HITs. Raises before any AWS call."""
    from amt.gateway import check_cap
    from amt.hosting import require_bucket

    ledger = check_study(folder, live)
    require_bucket(ledger)
    check_cap(ledger.study_definition(), live, hits=len(ledger.hits))


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
    check_study(folder, live)
    gateway = Gateway(mturk_client(live), live=live)
    expired = gateway.expire(folder)
    return {"expired": expired, "deleted": gateway.delete(folder) if delete else 0}


def reject_assignment(folder: str, assignment: str, reason: str, live: bool) -> None:
    from amt.collect import check_rejection, reject

    check_study(folder, live)
    check_rejection(assignment, reason)  # before any AWS client
    reject(mturk_client(live), folder, assignment, reason)
