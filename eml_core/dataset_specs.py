"""Dataset specs: the one-line names of datasets the command line, flows and manifests use.

``cub:PATH`` (CUB-200-2011 layout), ``folder:ROOT[,CSV]`` (images + a CSV),
``market1501:PATH`` and ``faces:PATH`` (identity datasets,
:mod:`eml_core.identity_datasets`), ``synthetic[:PATH]`` (the embedded default,
generated if absent). Kept apart from the loaders so that every loader module
can import :mod:`eml_core.datasets` without a cycle.
"""

from __future__ import annotations

from pathlib import Path

from eml_core.datasets import Dataset, DatasetError, load_cub, load_folder

SPEC_FORMS = "cub:PATH, folder:ROOT[,CSV], market1501:PATH, faces:PATH or synthetic[:PATH]"


def check_dataset_spec(spec: str, must_exist: bool = True) -> None:
    """Fail fast (before any flow starts) on a malformed spec or, with ``must_exist``, a missing dataset folder
    (a deployment's spec names a folder on the worker, checked there)."""
    if not isinstance(spec, str):
        raise DatasetError(f"dataset spec {spec!r}: expected a string")
    kind, _, argument = spec.partition(":")
    if kind == "synthetic":
        return
    if kind not in ("cub", "folder", "market1501", "faces") or not argument:
        raise DatasetError(f"dataset spec {spec!r}: expected {SPEC_FORMS}")
    root = Path(argument.partition(",")[0])
    if must_exist and not root.is_dir():
        raise DatasetError(f"dataset spec {spec!r}: folder {root} does not exist")


def dataset_from_spec(spec: str) -> Dataset:
    """``cub:PATH``, ``folder:ROOT`` or ``folder:ROOT,CSV``, ``market1501:PATH``, ``faces:PATH``
    (:mod:`eml_core.identity_datasets`), or ``synthetic[:PATH]`` (generated if absent)."""
    check_dataset_spec(spec)
    kind, _, argument = spec.partition(":")
    if kind == "cub" and argument:
        return load_cub(argument)
    if kind == "folder" and argument:
        root, _, csv_file = argument.partition(",")
        return load_folder(root, csv_file or None)
    if kind in ("market1501", "faces") and argument:
        from eml_core.identity_datasets import load_faces, load_market1501

        return load_market1501(argument) if kind == "market1501" else load_faces(argument)
    if kind == "synthetic":
        from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset

        folder = ensure_synthetic_dataset(argument or DEFAULT_LOCATION)
        dataset = load_cub(folder, name="synthetic")
        return dataset
    raise DatasetError(f"dataset spec {spec!r}: expected {SPEC_FORMS}")
