"""Prefect flows and the `eml` command line (the entry points sit at the top of the import graph)."""
