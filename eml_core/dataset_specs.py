"""Dataset specs: the one-line names of datasets the command line, flows and manifests use.

``cub:PATH`` (CUB-200-2011 layout), ``folder:ROOT[,CSV]`` (images + a CSV),
``market1501:PATH`` and ``faces:PATH`` (identity datasets,
:mod:`eml_core.identity_datasets`), ``synthetic[:PATH]`` (the embedded default,
generated if absent). Kept apart from the loaders so that every loader module
can import :mod:`eml_core.datasets` without a cycle.

Each kind of dataset accepts the split rules of :data:`SPLIT_RULES_OF` (:data:`eml_core.datasets.SPLIT_RULES`),
the first being its default: ``classes`` (the metric-learning protocol: first half of the class ids for
training, second half for evaluation) for CUB, the embedded data and faces; ``official`` (the dataset's own
per-image split) for ``folder:`` CSVs, whose ``split`` column the user wrote, and Market-1501, whose official
split is already identity-disjoint. Faces have no official split.
"""

from __future__ import annotations

from pathlib import Path

from eml_core.datasets import SPLIT_RULES, Dataset, DatasetError, load_cub, load_folder

SPEC_FORMS = "cub:PATH, folder:ROOT[,CSV], market1501:PATH, faces:PATH or synthetic[:PATH]"

# kind -> the split rules it accepts, its default first
SPLIT_RULES_OF: dict[str, tuple[str, ...]] = {
    "cub": ("classes", "official"),
    "synthetic": ("classes", "official"),
    "folder": ("official", "classes"),
    "market1501": ("official",),
    "faces": ("classes",),
}


def _kind(spec: str) -> str:
    return spec.partition(":")[0]


def split_rule_of(spec: str, split_rule: str | None = None) -> str:
    """The split rule a dataset is loaded with: ``split_rule`` if the spec's kind accepts it, its default if None.

    A rule the kind cannot honour is a :class:`DatasetError` saying why (a malformed spec is
    :func:`check_dataset_spec`'s to report).
    """
    if split_rule is not None and split_rule not in SPLIT_RULES:
        raise DatasetError(f"split rule {split_rule!r}: expected one of {', '.join(SPLIT_RULES)}")
    accepted = SPLIT_RULES_OF.get(_kind(spec), SPLIT_RULES)
    if split_rule is None:
        return accepted[0]
    if split_rule not in accepted:
        why = {"market1501": "its official split already keeps training and test identities apart",
               "faces": "a face folder has no per-image split of its own"}.get(_kind(spec), "")
        raise DatasetError(f"dataset spec {spec!r}: split rule {split_rule!r} is not available for "
                           f"{_kind(spec)} datasets (accepted: {', '.join(accepted)}){'; ' + why if why else ''}")
    return split_rule


def check_dataset_spec(spec: str, must_exist: bool = True, split_rule: str | None = None) -> None:
    """Fail fast (before any flow starts) on a malformed spec, a split rule its kind cannot honour or, with
    ``must_exist``, a missing dataset folder (a deployment's spec names a folder on the worker, checked there)."""
    if not isinstance(spec, str):
        raise DatasetError(f"dataset spec {spec!r}: expected a string")
    kind, _, argument = spec.partition(":")
    if kind != "synthetic" and (kind not in ("cub", "folder", "market1501", "faces") or not argument):
        raise DatasetError(f"dataset spec {spec!r}: expected {SPEC_FORMS}")
    split_rule_of(spec, split_rule)
    if kind == "synthetic":
        return
    root = Path(argument.partition(",")[0])
    if must_exist and not root.is_dir():
        raise DatasetError(f"dataset spec {spec!r}: folder {root} does not exist")


def dataset_from_spec(spec: str, split_rule: str | None = None) -> Dataset:
    """``cub:PATH``, ``folder:ROOT`` or ``folder:ROOT,CSV``, ``market1501:PATH``, ``faces:PATH``
    (:mod:`eml_core.identity_datasets`), or ``synthetic[:PATH]`` (generated if absent), split by ``split_rule``
    (None: the kind's default, :data:`SPLIT_RULES_OF`); the rule is recorded in ``Dataset.split_rule``."""
    check_dataset_spec(spec, split_rule=split_rule)
    rule = split_rule_of(spec, split_rule)
    kind, _, argument = spec.partition(":")
    if kind == "cub" and argument:
        return load_cub(argument, split_rule=rule)
    if kind == "folder" and argument:
        root, _, csv_file = argument.partition(",")
        return load_folder(root, csv_file or None, split_rule=rule)
    if kind in ("market1501", "faces") and argument:
        from eml_core.identity_datasets import load_faces, load_market1501

        return load_market1501(argument) if kind == "market1501" else load_faces(argument)
    if kind == "synthetic":
        from eml_core.synthetic import DEFAULT_LOCATION, ensure_synthetic_dataset

        folder = ensure_synthetic_dataset(argument or DEFAULT_LOCATION)
        return load_cub(folder, name="synthetic", split_rule=rule)
    raise DatasetError(f"dataset spec {spec!r}: expected {SPEC_FORMS}")
