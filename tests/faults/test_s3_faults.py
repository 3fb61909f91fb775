"""S3 faults under the localization flow: throttling, 500s and dropped connections, against moto's server.

Faults are injected on the wire by a proxy in front of moto (:mod:`tests.faults.s3_proxy`): for a seeded subset
of the requests it answers as S3 does under load (503 SlowDown, 500 InternalError) or drops the connection.
Transient faults must be absorbed by the S3 client's retries (the AWS SDK's standard strategy,
``EML_S3_MAX_ATTEMPTS``): the run completes with the clean run's tables. A fault that outlasts the retries must
fail the flow, and a rerun must resume and end with the same tables.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest

from eml_core.results import ResultsLocation, resolve_run
from tests.faults.runs import assert_same_tables, run_flow, tables
from tests.faults.s3_proxy import CONNECTION_RESET, RESPONSES, FaultProxy
from tests.hostile.harness import record

ENTRY = "localization flow on S3"
BUCKET = "eml-faults"
ATTEMPTS = 4  # EML_S3_MAX_ATTEMPTS in these tests: enough for the transient faults, quick to exhaust


@contextmanager
def injected(s3_endpoint, choose, monkeypatch):
    """Every S3 request of the results layer goes through a fault proxy meanwhile."""
    with FaultProxy(s3_endpoint, choose) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("EML_S3_MAX_ATTEMPTS", str(ATTEMPTS))
        try:
            yield proxy
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def seeded_transient_faults(seed: int, faults: int = 6, among: int = 60):
    """``faults`` faults of seeded kinds on seeded requests among the first ``among`` (a run makes more).

    Seeded calls are spread out, so no request meets more faults in a row than the client's attempts.
    """
    rng = random.Random(seed)
    plan = {call: rng.choice([*RESPONSES, CONNECTION_RESET]) for call in rng.sample(range(1, among + 1), faults)}
    return lambda call, request: plan.get(call)


@pytest.mark.parametrize("seed", [1, 2])
def test_transient_s3_faults_are_retried_and_the_run_ends_with_the_clean_tables(
        seed, bucket, s3_endpoint, clean_localization, prefect_harness, tiny_synthetic_root, monkeypatch):
    location = f"s3://{bucket}/transient-{seed}"
    with injected(s3_endpoint, seeded_transient_faults(seed), monkeypatch) as injector:
        run_flow(tiny_synthetic_root, location)
    assert len(injector.injected) == 6 and injector.calls > 60, injector.injected  # every planned fault fired
    assert_same_tables(tables(location), clean_localization.tables)
    for call, operation, key, fault in injector.injected:
        record(ENTRY, f"{fault} on {operation} {key} (request {call} of {injector.calls}), seed {seed}",
               "survived", kind="fault")


def test_a_fault_outlasting_the_retries_fails_the_flow_and_a_rerun_resumes(
        bucket, s3_endpoint, clean_localization, prefect_harness, tiny_synthetic_root, monkeypatch):
    location = f"s3://{bucket}/exhausted"
    doomed: list[str] = []  # the first localize shard's first method file: every attempt to store it fails

    def choose(call, request):
        if request.method in ("PUT", "POST") and "/shards/localization/" in request.path:
            doomed[:] = doomed or [request.key]
            return "InternalError" if request.key == doomed[0] else None
        return None

    with injected(s3_endpoint, choose, monkeypatch) as injector, pytest.raises(OSError) as failure:
        run_flow(tiny_synthetic_root, location)
    attempts = ATTEMPTS
    assert "injected fault" in str(failure.value) and doomed[0] in str(failure.value)
    assert injector.counts() == {"InternalError": attempts}
    store = ResultsLocation(location)
    assert not store.exists("localization/latest.json")  # no finished run

    run_flow(tiny_synthetic_root, location)
    manifest = resolve_run(location, "localization").read_json("manifest.json")
    assert 0 < manifest["shards_computed_this_run"] <= 3  # the embed shards (all done) resumed from S3
    assert_same_tables(tables(location), clean_localization.tables)
    key = injector.injected[0][2]
    record(ENTRY, f"InternalError on all {attempts} attempts of PutObject {key}: flow failed, rerun resumed",
           "survived", kind="fault")
