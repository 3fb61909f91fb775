"""How a flow cuts its work into shards (the unit that is computed, cached and resumed as a whole)."""

from __future__ import annotations

from eml_core.errors import ArgumentError


def shards(items: list, size: int) -> list[list]:
    """``items`` in order, cut into ceil(n / size) consecutive shards whose lengths differ by at most one.

    ``size`` is the most a shard holds. Equal lengths rather than full shards and a remainder: a run on a
    cluster lasts as long as its slowest worker, so 400 items with ``size`` 128 become 4 shards of 100, not
    128, 128, 128 and 16 (two workers would then do 256 and 144).
    """
    if size < 1:
        raise ArgumentError("shard_size", f"must be at least 1, got {size}")
    count = -(-len(items) // size)
    if count == 0:
        return []
    base, longer = divmod(len(items), count)   # the first `longer` shards hold one item more
    cut, start = [], 0
    for index in range(count):
        end = start + base + (index < longer)
        cut.append(items[start:end])
        start = end
    return cut
