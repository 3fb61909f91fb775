"""Where a flow's shard tasks run: in this process, on a local Dask cluster, or on an existing Dask scheduler.

A flow configuration's ``cluster`` field names the place, in one of three forms:

* ``""`` (default): in this process, on Prefect's thread pool (``EML_TASK_WORKERS`` threads, 1 by default:
  torch already uses every core inside one shard);
* ``"local:N"``: a Dask cluster of N worker processes on this machine (one thread each), started when the run
  starts and stopped when it ends. On a machine with CUDA, one more worker process per GPU, each offering the
  Dask resource ``GPU=1`` (with `dask-cuda <https://docs.rapids.ai/api/dask-cuda/stable/>`_ installed, those
  come from its ``LocalCUDACluster``: one worker per GPU with the GPU's CPU affinity; without it, plain
  workers with ``CUDA_VISIBLE_DEVICES`` set to their GPU);
* ``"tcp://HOST:PORT"``: the Dask scheduler already running there (``dask scheduler``, ``dask worker``,
  ``dask cuda worker``, a Kubernetes or HPC deployment...).

The Dask forms go through prefect-dask's ``DaskTaskRunner``: Prefect still records every task run, and the flow
body is the same for every form. Model shards are submitted inside :func:`gpu_tasks`: annotated to need one
``GPU`` resource when some worker of the cluster offers it, else they run on the CPU workers after a one-line
notice (never an error). Shards that do not need a model (the threshold sweep) are not annotated and run on any
worker. Shard results are content-keyed files written atomically in the results location
(:mod:`tasks.shard_cache`), so a task that Dask reschedules after losing a worker writes the same files once
more, and a rerun resumes from them, whichever worker wrote them.

Workers must reach the Prefect API to report their task runs. A flow run on Prefect's temporary (ephemeral)
server has no API address in its settings, and each worker process would start a server of its own;
:func:`workers_reach_api` gives them the address of the flow's server instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from eml_core.errors import ArgumentError

# Prefect, prefect-dask and distributed are imported inside the functions that use them: flow configurations
# import this module for its validators, and the command line validates them before Prefect's settings are set.

LOCAL = re.compile(r"^local:(\d{1,4})$")
MAX_LOCAL_WORKERS = 256
FORMS = '"" (in this process), "local:N" (N worker processes) or "tcp://HOST:PORT" (an existing Dask scheduler)'
GPU_RESOURCE = "GPU"
CONNECT_SECONDS = 5.0
# The scheduler always serves HTTP (health, metrics); without a dashboard it would take port 8787, which other
# clusters on the machine want too: a free port on 127.0.0.1 instead.
SCHEDULER_HTTP = {"dashboard_address": "127.0.0.1:0"}


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``cluster`` value: ``kind`` is ``in_process``, ``local`` or ``scheduler``."""

    kind: str
    workers: int = 0
    address: str = ""


def parse_cluster(value: str) -> ClusterSpec:
    """The place a ``cluster`` value names; ValueError (one line) for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"expected {FORMS}, got {value!r}")
    if value == "":
        return ClusterSpec("in_process")
    local = LOCAL.match(value)
    if local:
        workers = int(local[1])
        if not 1 <= workers <= MAX_LOCAL_WORKERS:
            raise ValueError(f"local:N needs 1 <= N <= {MAX_LOCAL_WORKERS} worker processes, got {value!r}")
        return ClusterSpec("local", workers=workers)
    if value.startswith("tcp://"):
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or not 1 <= port <= 65535 or parts.path not in ("", "/") \
                or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"expected tcp://HOST:PORT with a port in 1..65535, got {value!r}")
        return ClusterSpec("scheduler", address=f"tcp://{parts.netloc}")
    raise ValueError(f"expected {FORMS}, got {value!r}")


def check_cluster(value: str) -> str:
    """Field validator: the form of a ``cluster`` value."""
    parse_cluster(value)
    return value


def cluster_present(value: str, field: str = "cluster") -> None:
    """For ``check_inputs``: a ``tcp://`` scheduler answers (a TCP connection within a few seconds)."""
    spec = parse_cluster(value)
    if spec.kind != "scheduler":
        return
    parts = urlsplit(spec.address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_SECONDS):
            pass
    except OSError as error:
        raise ArgumentError(field, f"no Dask scheduler answers at {spec.address} "
                                   f"({error.strerror or type(error).__name__})") from None


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_cluster(workers: int, gpus: int = 0):
    """A Dask cluster on this machine: ``workers`` CPU worker processes (one thread each) and one worker process
    per GPU offering the resource ``GPU=1``. Every server listens on 127.0.0.1 only.

    With dask-cuda installed and ``gpus > 0``, the GPU workers are its ``LocalCUDACluster``'s (CPU affinity,
    ``CUDA_VISIBLE_DEVICES`` per worker); the CPU workers join that cluster's scheduler.
    """
    import distributed

    from tasks.worker_plugins import PrefectServicesDrain

    cpu_options = {"nthreads": 1, "host": "127.0.0.1", "plugins": {PrefectServicesDrain()}}
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster  # optional: only on machines with CUDA
        except ImportError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None:
            cluster = LocalCUDACluster(n_workers=gpus, threads_per_worker=1, resources={GPU_RESOURCE: 1},
                                       host="127.0.0.1", dashboard_address=None, scheduler_kwargs=SCHEDULER_HTTP,
                                       plugins={PrefectServicesDrain()})
            cpu = {"cls": distributed.Nanny, "options": {**cpu_options, "env": {"CUDA_VISIBLE_DEVICES": ""}}}
            return _add_workers(cluster, {f"cpu-{i}": cpu for i in range(workers)})
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, scheduler_kwargs=SCHEDULER_HTTP,
                                       plugins={PrefectServicesDrain()})
    if not gpus:
        return cluster
    template = cluster.new_spec
    gpu_specs = {f"gpu-{index}": {"cls": template["cls"],
                                  "options": {**template["options"], "nthreads": 1,
                                              "resources": {GPU_RESOURCE: 1},
                                              "env": {"CUDA_VISIBLE_DEVICES": str(index)}}}
                 for index in range(gpus)}
    return _add_workers(cluster, gpu_specs)


def _add_workers(cluster, specs: dict):
    """Start more workers of other kinds in a running SpecCluster (its public ``worker_spec``, then ``scale``)."""
    cluster.worker_spec.update(specs)
    cluster.scale(len(cluster.worker_spec))
    cluster.wait_for_workers(len(cluster.worker_spec))
    return cluster


def task_runner(cluster: str):
    """The Prefect task runner for a ``cluster`` value (a new one per flow run: Dask clusters it starts are
    stopped when the run ends)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    spec = parse_cluster(cluster)
    if spec.kind == "in_process":
        return ThreadPoolTaskRunner(max_workers=int(os.environ.get("EML_TASK_WORKERS", "1")))
    from prefect_dask import DaskTaskRunner

    if spec.kind == "local":
        # prefect-dask types cluster_class as a no-argument callable, yet passes cluster_kwargs to it
        return DaskTaskRunner(cluster_class=local_cluster,  # type: ignore[arg-type]
                              cluster_kwargs={"workers": spec.workers, "gpus": visible_gpus()})
    return DaskTaskRunner(address=spec.address)


@contextlib.contextmanager
def workers_reach_api(cluster: str) -> Iterator[None]:
    """Run the block with the Prefect API address in the settings that task runs carry to Dask workers.

    With ``PREFECT_API_URL`` set (a Prefect server, Prefect Cloud, a deployment's worker, the test harness)
    nothing changes. On the temporary server a flow run starts when none is set, the block runs with that
    server's address, so workers report to it instead of each starting a server of their own.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if parse_cluster(cluster).kind == "in_process" or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's temporary server (started by the flow run's client)
    server.start()                   # a no-op when it is running
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def _dask_client():
    """The Dask client of the running flow's task runner, or None when tasks run in this process."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:  # prefect-dask is a dependency; without it only the in-process runner exists
        return None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def gpu_workers(client) -> int:
    """How many workers of a Dask cluster offer the ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return sum(1 for worker in workers if worker.get("resources", {}).get(GPU_RESOURCE, 0) >= 1)


@contextlib.contextmanager
def gpu_tasks(notice=print) -> Iterator[dict]:
    """Submit model shards inside this block: on a Dask cluster with GPU workers they are annotated to need one
    (``dask.annotate(resources={"GPU": 1})``); on one without, they run on its CPU workers after a one-line
    ``notice``. In-process, nothing changes. Yields what was decided, for the run's manifest."""
    client = _dask_client()
    if client is None:
        yield {"runner": "in_process", "gpu_workers": 0, "annotated": False}
        return
    gpus = gpu_workers(client)
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    placement = {"runner": "dask", "scheduler": client.scheduler.address, "workers": workers, "gpu_workers": gpus,
                 "annotated": bool(gpus)}
    if not gpus:
        notice(f"no worker of the Dask cluster at {client.scheduler.address} offers a GPU: model shards run on "
               f"its {workers} CPU worker(s)")
        yield placement
        return
    import dask

    with dask.annotate(resources={GPU_RESOURCE: 1}):
        yield placement
