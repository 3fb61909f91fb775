"""Shards: every item once, in order, ceil(n / size) shards of lengths within one, none longer than size."""

import pytest

from eml_core.errors import ArgumentError
from tasks.sharding import shards


def test_shards_against_brute_force():
    for count in range(0, 130):
        items = list(range(count))
        for size in range(1, 40):
            cut = shards(items, size)
            assert [item for shard in cut for item in shard] == items
            assert len(cut) == -(-count // size)                  # as many shards as full ones would need
            lengths = [len(shard) for shard in cut]
            assert all(0 < length <= size for length in lengths)
            assert not lengths or max(lengths) - min(lengths) <= 1
            assert lengths == sorted(lengths, reverse=True)        # the longer ones first


def test_the_example_in_the_docstring_and_a_bad_size():
    assert [len(s) for s in shards(list(range(400)), 128)] == [100, 100, 100, 100]
    assert [len(s) for s in shards(list(range(200)), 128)] == [100, 100]
    with pytest.raises(ArgumentError, match="shard_size"):
        shards([1, 2], 0)
