"""Shard tasks on Dask (``config.cluster``): the same tables as in this process, with a worker killed mid-run too,
and model shards routed to GPU workers only where a cluster has them."""

from __future__ import annotations

import os

import pytest

from eml_core.errors import ArgumentError
from tasks.cluster import ClusterSpec, check_cluster, cluster_present, parse_cluster, task_runner
from tests.faults.runs import assert_same_tables, run_flow, tables
from tests.hostile.harness import record

TINY = "tests.conftest:tiny"


def _run(root, out, cluster: str):
    from flows.evaluate_localization import evaluate_localization
    from tasks.configs import LocalizationConfig

    return evaluate_localization(LocalizationConfig(dataset=f"cub:{root}", model=TINY, out=str(out), shard_size=4,
                                                    cluster=cluster))


@pytest.fixture(scope="module")
def in_process_tables(prefect_harness, tiny_synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process") / "run"
    run_flow(tiny_synthetic_root, out)
    return tables(out)


@pytest.mark.parametrize("value, expected", [
    ("", ClusterSpec("in_process")),
    ("local:2", ClusterSpec("local", workers=2)),
    ("tcp://10.0.0.5:8786", ClusterSpec("scheduler", address="tcp://10.0.0.5:8786")),
    ("tcp://scheduler.example.org:8786/", ClusterSpec("scheduler", address="tcp://scheduler.example.org:8786")),
    ("tcp://[::1]:8786", ClusterSpec("scheduler", address="tcp://[::1]:8786")),
])
def test_cluster_forms(value, expected):
    assert parse_cluster(value) == expected and check_cluster(value) == value


@pytest.mark.parametrize("value", ["local", "local:0", "local:-1", "local:300", "local:two", "tcp://host",
                                   "tcp://host:0", "tcp://host:99999", "tcp://:8786", "tcp://user@host:8786",
                                   "tcp://host:8786/path", "http://host:8786", "host:8786", " local:2", "dask"])
def test_bad_cluster_values_are_one_line_errors(value):
    with pytest.raises(ValueError) as refused:
        check_cluster(value)
    assert "\n" not in str(refused.value) and repr(value) in str(refused.value)
    record("LocalizationConfig.cluster", f"cluster={value!r}", "clean_error")


def test_a_scheduler_that_does_not_answer_is_named_before_the_run():
    with pytest.raises(ArgumentError) as refused:
        cluster_present("tcp://127.0.0.1:1")  # nothing listens on port 1
    assert refused.value.argument == "cluster"
    assert "no Dask scheduler answers at tcp://127.0.0.1:1" in str(refused.value)
    cluster_present("")           # nothing to check in this process
    cluster_present("local:2")    # started by the run itself
    record("LocalizationConfig.check_inputs", "cluster=tcp://127.0.0.1:1 (nothing listens)", "clean_error")


def test_in_process_is_prefects_thread_pool():
    from prefect.task_runners import ThreadPoolTaskRunner

    assert isinstance(task_runner(""), ThreadPoolTaskRunner)


def test_local_cluster_gives_the_in_process_tables_and_says_why_no_gpu(prefect_harness, tiny_synthetic_root,
                                                                       in_process_tables, tmp_path):
    result = _run(tiny_synthetic_root, tmp_path / "run", "local:2")
    assert_same_tables(tables(tmp_path / "run"), in_process_tables)
    execution = result["manifest"]["execution"]
    # no CUDA here: the model shards were not annotated and ran on the 2 CPU workers, after a one-line notice
    assert execution == {"cluster": "local:2", "runner": "dask", "scheduler": execution["scheduler"],
                         "workers": 2, "gpu_workers": 0, "annotated": False}
    assert execution["scheduler"].startswith("tcp://127.0.0.1:")
    assert result["manifest"]["shards_computed_this_run"] == 6  # 3 embed + 3 localize shards, all on the cluster


def test_a_worker_killed_mid_run_is_replaced_and_the_tables_are_the_in_process_ones(
        prefect_harness, tiny_synthetic_root, in_process_tables, tmp_path):
    """A cluster the test owns (one CPU worker, one worker offering a GPU resource), reached by its tcp://
    address. The first worker to write a localization file is SIGKILLed right after (its shard part-written);
    Dask reschedules the shard and the run ends with the in-process tables. Model shards ran on the GPU worker
    only."""
    from distributed import Client, get_task_stream

    from tasks.cluster import local_cluster
    from tests.faults.dask_kill import KillOnceAtLocalizationWrite

    marker = tmp_path / "killed"
    with local_cluster(workers=1, gpus=1) as cluster, Client(cluster) as client:
        gpu_worker = next(address for address, worker in client.scheduler_info()["workers"].items()
                          if worker["name"] == "gpu-0")
        client.register_plugin(KillOnceAtLocalizationWrite(str(marker)))
        with get_task_stream(client) as stream:
            result = _run(tiny_synthetic_root, tmp_path / "run", cluster.scheduler_address)
        client.wait_for_workers(2)  # the killed worker's nanny started a fresh one
        survivors = client.scheduler_info()["workers"]

    pid, path = marker.read_text().split(" ", 1)
    assert int(pid) != os.getpid() and "/shards/localization/" in path
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # that worker process is gone
    assert len(survivors) == 2 and int(pid) not in {w.get("pid") for w in survivors.values()}
    assert_same_tables(tables(tmp_path / "run"), in_process_tables)
    assert result["manifest"]["execution"]["gpu_workers"] == 1 and result["manifest"]["execution"]["annotated"]
    embed = [task for task in stream.data if "embed" in str(task["key"])]
    # 16 images in shards of 4, each on a GPU worker: the first one, or the one its nanny started when the
    # killed worker was the GPU worker (Dask then recomputes the embed results that died with it)
    gpu_workers = {gpu_worker} | {address for address, worker in survivors.items() if worker["name"] == "gpu-0"}
    assert len({task["key"] for task in embed}) == 4 and {task["worker"] for task in embed} <= gpu_workers
    record("evaluate_localization on Dask", "a worker SIGKILLed mid-way through a localization shard", "survived",
           kind="fault")

