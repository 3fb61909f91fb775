"""Dask worker plugins of the clusters :mod:`tasks.cluster` starts (a module of its own: it imports distributed,
which flow configurations must not pay for)."""

from __future__ import annotations

import asyncio

from distributed.diagnostics.plugin import WorkerPlugin

DRAIN_SECONDS = 3.0


class PrefectServicesDrain(WorkerPlugin):
    """When a worker closes, flush its Prefect services (task-run events, logs) while the flow's API still
    answers. Without it a local worker flushes them at interpreter exit, after its cluster has begun to close,
    and its nanny kills it after 4 seconds of waiting."""

    name = "eml-prefect-services-drain"

    async def teardown(self, worker) -> None:
        # on a thread of its own: Prefect drains synchronously outside an event loop (the worker's is running here)
        await asyncio.to_thread(_drain_prefect_services)


def _drain_prefect_services() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=DRAIN_SECONDS, at_exit=False)
