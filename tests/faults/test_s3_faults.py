"""S3 faults under the localization flow: throttling, 500s and dropped connections, against moto's server.

Faults are injected through botocore's own event hooks: a ``before-send.s3`` handler answers a seeded subset
of the requests itself, with the response S3 sends under load (503 SlowDown, 500 InternalError) or by dropping
the connection, instead of sending them. Transient faults must be absorbed by botocore's retries (standard
mode, ``tasks.results.S3_RETRIES``): the run completes with the clean run's tables. A fault that outlasts the
retries must fail the flow, and a rerun must resume and end with the same tables.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

import pytest

from tasks.results import S3_RETRIES, ResultsLocation
from tests.faults.runs import assert_same_tables, run_flow, tables
from tests.hostile.harness import record

ENTRY = "localization flow on S3"
BUCKET = "eml-faults"
RESPONSES = {"SlowDown": 503, "InternalError": 500}  # error code -> HTTP status, as S3 sends them
CONNECTION_RESET = "connection reset"


class _Body:
    """The ``raw`` of a botocore AWSResponse: something with ``stream()``."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


class S3FaultInjector:
    """A ``before-send.s3`` handler: ``choose(call number, operation, request)`` names the fault, or None to send.

    ``injected`` lists what it did: (call number, operation, object key, fault).
    """

    def __init__(self, choose: Callable[[int, str, object], str | None]):
        self.choose = choose
        self.calls = 0
        self.injected: list[tuple[int, str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, request, event_name: str, **_):
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError

        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.calls += 1
            fault = self.choose(self.calls, operation, request)
            if fault is None:
                return None
            key = request.url.split(f"/{BUCKET}/", 1)[-1].split("?", 1)[0]
            self.injected.append((self.calls, operation, key, fault))
        if fault == CONNECTION_RESET:
            raise ConnectionClosedError(endpoint_url=request.url)
        body = b"" if request.method == "HEAD" else (  # S3 sends no body with a HEAD's error
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault}</Code><Message>injected fault"
            f"</Message><RequestId>fault-{self.calls}</RequestId></Error>").encode()
        return AWSResponse(request.url, RESPONSES[fault], {"Content-Type": "application/xml"}, _Body(body))

    def counts(self) -> Counter:
        return Counter(fault for *_, fault in self.injected)


@contextmanager
def injected(injector: S3FaultInjector):
    """Every S3 client created meanwhile from boto3's default session (ResultsLocation's) carries the handler."""
    import boto3

    events = boto3.DEFAULT_SESSION.events
    events.register("before-send.s3", injector)
    try:
        yield injector
    finally:
        events.unregister("before-send.s3", injector)


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)  # also sets up boto3's default session
    return BUCKET


def seeded_transient_faults(seed: int, faults: int = 6, among: int = 60):
    """``faults`` faults of seeded kinds on seeded requests among the first ``among`` (a run makes more).

    At most a few land in a row, fewer than the attempts botocore makes, so every one is transient.
    """
    rng = random.Random(seed)
    plan = {call: rng.choice([*RESPONSES, CONNECTION_RESET]) for call in rng.sample(range(1, among + 1), faults)}
    return lambda call, operation, request: plan.get(call)


@pytest.mark.parametrize("seed", [1, 2])
def test_transient_s3_faults_are_retried_and_the_run_ends_with_the_clean_tables(
        seed, bucket, clean_localization, prefect_harness, tiny_synthetic_root):
    location = f"s3://{bucket}/transient-{seed}"
    with injected(S3FaultInjector(seeded_transient_faults(seed))) as injector:
        run_flow(tiny_synthetic_root, location)
    assert len(injector.injected) == 6 and injector.calls > 60, injector.injected  # every planned fault fired
    assert_same_tables(tables(location), clean_localization.tables)
    for call, operation, key, fault in injector.injected:
        record(ENTRY, f"{fault} on {operation} {key} (request {call} of {injector.calls}), seed {seed}",
               "survived", kind="fault")


def test_a_fault_outlasting_the_retries_fails_the_flow_and_a_rerun_resumes(bucket, clean_localization,
                                                                          prefect_harness, tiny_synthetic_root):
    location = f"s3://{bucket}/exhausted"
    doomed: list[str] = []  # the first localize shard's first method file: every attempt to store it fails

    def choose(call, operation, request):
        if operation == "PutObject" and "/shards/localization/" in request.url:
            doomed[:] = doomed or [request.url]
            return "InternalError" if request.url == doomed[0] else None
        return None

    with injected(S3FaultInjector(choose)) as injector, pytest.raises(Exception) as failure:
        run_flow(tiny_synthetic_root, location)
    attempts = S3_RETRIES["total_max_attempts"]
    assert f"(InternalError) when calling the PutObject operation (reached max retries: {attempts - 1})" \
        in str(failure.value)
    assert injector.counts() == {"InternalError": attempts}
    store = ResultsLocation(location)
    assert not store.exists("manifest.json")

    run_flow(tiny_synthetic_root, location)
    manifest = json.loads(store.read_bytes("manifest.json"))
    assert 0 < manifest["shards_computed_this_run"] <= 3  # the embed shards (all done) resumed from S3
    assert_same_tables(tables(location), clean_localization.tables)
    key = injector.injected[0][2]
    record(ENTRY, f"InternalError on all {attempts} attempts of PutObject {key}: flow failed, rerun resumed",
           "survived", kind="fault")
