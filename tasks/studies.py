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
    gateway = Gateway(client or mturk_client(live), live=live)
    return gateway.launch(folder, stage_stimuli=stage_stimuli(s3_client))


@task(name="collect-study", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def collect_responses(folder: str, live: bool = False, client=None) -> dict:
    live = study_mode(Ledger.load(folder), live)  # collect where the study was launched
    return collect(client or mturk_client(live), folder)


@task(name="analyze-study", cache_policy=NO_CACHE)
def analyze(folder: str) -> dict:
    return analyse_folder(folder)
