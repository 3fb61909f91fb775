"""The ad-hoc region rankings table that retrieval studies read (to be replaced by the interactive retrieval
flow's output)."""

from __future__ import annotations

import io

from eml_core.atomic import write_bytes_atomic
from eml_core.dataset_specs import dataset_from_spec
from eml_core.models import model_from_spec
from eml_core.retrieval import region_rankings


def write_rankings(dataset: str, model: str, out: str, queries: int, top_k: int) -> tuple[dict, int]:
    data = dataset_from_spec(dataset)
    table, errors = region_rankings(model_from_spec(model), data.split("test")[:queries], data.split("test"),
                                    top_k=top_k)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    write_bytes_atomic(out, buffer.getvalue())
    return {"rows": len(table), "queries": table["query_id"].nunique() if len(table) else 0}, len(errors)
