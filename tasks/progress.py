"""Progress bars for long work (training epochs, shards, HITs): shown on a terminal, silent elsewhere (logs,
pipes, CI, Prefect workers). ``EML_NO_PROGRESS=1`` switches them off everywhere."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("EML_NO_PROGRESS")


def bar(total: int | None, description: str) -> tqdm:
    """A bar on stderr; a disabled one (every call a no-op) when output is not a terminal."""
    return tqdm(total=total, desc=description, unit="", leave=False, disable=not enabled(), file=sys.stderr)


def results(futures: list, description: str) -> list:
    """The results of Prefect task futures, in submission order, with a bar that advances as each finishes."""
    from prefect.futures import as_completed

    with bar(len(futures), description) as progress:
        for _ in as_completed(futures):
            progress.update()
    return [future.result() for future in futures]
