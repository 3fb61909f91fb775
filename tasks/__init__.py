"""Thin Prefect tasks over eml_core and amt, working on shards of items (issue 3 adds the first)."""
