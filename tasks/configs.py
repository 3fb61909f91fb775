"""Typed, validated configurations of the flows: one definition for the CLI, the flow, the manifest and
``prefect.yaml``.

Every field is checked where a run starts (the CLI before any server starts, the
flow on the worker that runs a deployment), so a bad value gets one line naming
the parameter instead of a traceback, or worse, a run that "succeeds" with zero
rows. :func:`validated` turns pydantic's report into an
:class:`~eml_core.errors.ArgumentError` naming the first bad field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from eml_core.crossview_training import CrossViewTrainingConfig
from eml_core.dataset_specs import check_dataset_spec
from eml_core.errors import ArgumentError, EmlError
from eml_core.faithfulness import DEFAULT_STEPS as FAITHFULNESS_STEPS
from eml_core.faithfulness import REMOVALS, check_steps
from eml_core.methods import DEFAULT_METHODS, REGISTRY
from eml_core.sweep import FINE_THRESHOLDS
from eml_core.training import TrainingConfig
from tasks.cluster import check_cluster, cluster_present

ALL_METHODS = tuple(REGISTRY)
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SPLITS = ("train", "test")
SIDES = ("query", "retrieved")
PAIRINGS = ("nearest", "random")
# None: the dataset kind's default (eml_core.dataset_specs.SPLIT_RULES_OF: classes for CUB and the embedded data)
SplitRule = Literal["classes", "official"] | None

Config = TypeVar("Config", bound=BaseModel)


def validated(config_class: type[Config], **values: Any) -> Config:
    """Build ``config_class`` from ``values``; a bad value raises ArgumentError naming the field."""
    try:
        return config_class(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or config_class.__name__
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("value_error", "assertion_error") and "input" in first:
            message += f", got {first['input']!r}"
        raise ArgumentError(field, message) from None


def check_results_location(out: str) -> str:
    """A local folder or ``s3://bucket[/prefix]`` with a valid bucket name (the form; an existing file in the
    way is found by ``check_inputs``)."""
    if not isinstance(out, str) or not out.strip():
        raise ValueError("expected a folder or s3://bucket/prefix")
    if out.startswith("s3://"):
        bucket = out[len("s3://"):].partition("/")[0]
        if not S3_BUCKET.match(bucket):
            raise ValueError(f"{out!r}: {bucket!r} is not a valid S3 bucket name")
        return out
    if "://" in out:
        raise ValueError(f"{out!r}: only local folders and s3:// locations are supported")
    return out


def _choices(values: tuple[str, ...], allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    if not values:
        raise ValueError(f"give at least one {name} ({', '.join(allowed)})")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {name} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}s are repeated: {', '.join(values)}")
    return tuple(values)


def _form(check, value, **options):
    """Field validators check a spec's form only (``must_exist=False``; what it names is checked by
    ``check_inputs`` where the run starts) and report a problem as pydantic expects: a ValueError."""
    try:
        check(value, must_exist=False, **options)
    except EmlError as error:
        raise ValueError(str(error)) from None
    return value


def check_dataset(value: str) -> str:
    """The form of a dataset spec (the folder itself is checked by ``check_inputs`` where the run starts)."""
    return _form(check_dataset_spec, value)


def check_split_rule(value: str | None, info: ValidationInfo) -> str | None:
    """A split rule the config's dataset can honour (Market-1501 has only its official, already
    identity-disjoint split; a face folder only the class rule). Declared after ``dataset``."""
    if "dataset" in info.data:  # a bad dataset spec is reported on its own field
        _form(check_dataset_spec, info.data["dataset"], split_rule=value)
    return value


def check_model(value: str) -> str:
    """The form of a model spec (a checkpoint file is checked by ``check_inputs`` where the run starts)."""
    from eml_core.models import check_model_spec

    return _form(check_model_spec, value)


def _present(field: str, check, *args) -> None:
    """Run an existence check; its error names the configuration field."""
    try:
        check(*args)
    except ArgumentError as error:
        raise ArgumentError(field, error.problem) from None
    except EmlError as error:
        raise ArgumentError(field, str(error)) from None


def dataset_present(spec: str, field: str = "dataset") -> None:
    _present(field, check_dataset_spec, spec)


def model_present(spec: str, field: str = "model") -> None:
    from eml_core.models import check_model_spec

    _present(field, check_model_spec, spec)


def device_present(device: str, field: str = "device") -> None:
    from eml_core.models import resolve_device

    _present(field, resolve_device, device, field)


def folder_or_creatable(path: str, field: str = "out") -> None:
    if not path.startswith("s3://") and Path(path).exists() and not Path(path).is_dir():
        raise ArgumentError(field, f"{path} exists and is not a folder")


def check_device(value: str) -> str:
    if not DEVICE.match(value):
        raise ValueError(f"expected cpu, cuda, cuda:N or auto, got {value!r}")
    return value


def check_methods(value: tuple[str, ...]) -> tuple[str, ...]:
    return _choices(value, tuple(REGISTRY), "method")


def as_config(config_class: type[Config], value: Config | dict) -> Config:
    """A flow's ``config`` argument: already validated (Prefect validates deployment parameters against the
    flow's signature), or a mapping from a plain ``.fn`` call, validated here."""
    if isinstance(value, config_class):
        return value
    if isinstance(value, dict):
        return validated(config_class, **value)
    raise ArgumentError("config", f"expected {config_class.__name__} or a mapping, got {type(value).__name__}")


TEMPLATE = re.compile(r"\{\{\s*\$?([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


def unfilled_templates(value: Any, where: str = "") -> list[tuple[str, str]]:
    """``(field, variable)`` of every ``{{ $NAME }}`` left in a configuration: a prefect.yaml template whose
    environment variable was not set where ``prefect deploy`` ran."""
    if isinstance(value, str):
        return [(where, match.group(1)) for match in TEMPLATE.finditer(value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in unfilled_templates(item, f"{where}.{key}"
                                                                                     if where else str(key))]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in unfilled_templates(item, where)]
    return []


class FlowConfig(BaseModel):
    """Base of the flow configurations: immutable, no unknown fields, strict where strings must stay strings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unfilled_templates(cls, values: Any) -> Any:
        """A deployment deployed without its local configuration carries ``{{ $NAME }}`` verbatim: refused,
        naming the variable, before a path like that is taken for a folder."""
        found = unfilled_templates(values)
        if found:
            field, name = found[0]
            raise ValueError(f"{field}: the prefect.yaml template {{{{ ${name.lstrip('$')} }}}} was never filled: "
                             f"set {name.lstrip('$')} where `prefect deploy` runs and deploy again "
                             f"(docs/deployments.md)")
        return values

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def check_inputs(self) -> None:
        """What only the machine that runs the work can check (files and folders exist, the device is there);
        called by the command line before any flow starts and by each flow when its run starts."""


class LocalizationConfig(FlowConfig):
    """Weakly supervised localization (paper Tables I, II): what to explain, how to pair, how to sweep.

    The defaults are the paper's protocol: the class-disjoint split (``split_rule`` None = the dataset's
    default, ``classes`` for CUB), Recall@K on both splits, Tables I/II on the evaluation split only
    (``localize_splits``), each image paired with a seeded random same-class image and both images of every pair
    scored (the authors' protocol). ``pairing="nearest"`` and ``sides=("query",)`` are the earlier choices, kept
    as options.
    """

    dataset: str = "synthetic"
    split_rule: SplitRule = None
    model: str = "mobilenet_v2:gap_fc"
    out: str = "runs/localization"
    methods: tuple[str, ...] = DEFAULT_METHODS
    splits: tuple[str, ...] = SPLITS                       # embedded, Recall@K per split
    localize_splits: tuple[str, ...] | None = ("test",)    # localized, Tables I/II (None: the same as splits)
    pairing: str = "random"
    sides: tuple[str, ...] = SIDES
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 128
    # images per batch; None: chosen from the device (eml_core.batches.default_batch_size)
    batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    connectivity: int = 4
    # where maps are thresholded: at each image's own size, or at 224x224 as the authors did (boxes scaled back)
    resolution: Literal["image", "authors_224"] = "image"
    thresholds: tuple[float, ...] = FINE_THRESHOLDS
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    device: str = "auto"
    # the backbone's autocast precision (heads and decomposition stay float32); float16/bfloat16 are for GPUs
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    # the embed shards keep every image's feature map at this precision and localization explains from them
    # (one decode and one backbone pass per image); "none": localization decodes and runs the backbone again
    feature_map_cache: Literal["float16", "float32", "none"] = "float32"
    # where shard tasks run: "" in this process, "local:N" N Dask worker processes, "tcp://HOST:PORT" a scheduler
    cluster: str = ""

    _dataset = field_validator("dataset")(check_dataset)
    _split_rule = field_validator("split_rule")(check_split_rule)
    _model = field_validator("model")(check_model)

    _out = field_validator("out")(check_results_location)
    _cluster = field_validator("cluster")(check_cluster)

    _methods = field_validator("methods")(check_methods)

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(value, SPLITS, "split")

    @field_validator("localize_splits")
    @classmethod
    def _localize_splits(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _choices(value, SPLITS, "split")

    @field_validator("sides")
    @classmethod
    def _sides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(value, SIDES, "side")

    @field_validator("pairing")
    @classmethod
    def _pairing(cls, value: str) -> str:
        return _choices((value,), PAIRINGS, "pairing")[0]

    @field_validator("connectivity")
    @classmethod
    def _connectivity(cls, value: int) -> int:
        if value not in (4, 8):
            raise ValueError(f"must be 4 or 8, got {value}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or not all(math.isfinite(t) and 0.0 <= t < 1.0 for t in value):
            raise ValueError("thresholds must be numbers in [0, 1)")
        return tuple(sorted(set(float(t) for t in value)))

    _device = field_validator("device")(check_device)

    @property
    def table_splits(self) -> tuple[str, ...]:
        """The splits Tables I/II are computed on (localized): ``localize_splits``, or ``splits`` when None."""
        return self.localize_splits or self.splits

    @property
    def embedded_splits(self) -> tuple[str, ...]:
        """Every split the run embeds: those of Recall@K and those it localizes."""
        return tuple(s for s in SPLITS if s in self.splits or s in self.table_splits)

    def check_inputs(self) -> None:
        dataset_present(self.dataset)
        model_present(self.model)
        folder_or_creatable(self.out)
        device_present(self.device)
        cluster_present(self.cluster)


class TrainConfig(FlowConfig):
    """Metric-learning training: the dataset, where the checkpoint goes, the device, and the recipe
    (:class:`eml_core.training.TrainingConfig`, nested so its fields are defined once)."""

    dataset: str = "synthetic"
    split_rule: SplitRule = None       # the model trains on the `train` split of this rule
    checkpoint: str = "runs/models/default.pt"
    device: str = "auto"
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    _dataset = field_validator("dataset")(check_dataset)
    _split_rule = field_validator("split_rule")(check_split_rule)
    _device = field_validator("device")(check_device)

    def check_inputs(self) -> None:
        dataset_present(self.dataset)
        device_present(self.device)
        if self.training.pretrained:  # e.g. ResNet-50's ImageNet weights, not installed offline
            from eml_core.models import check_pretrained_weights

            _present("backbone", check_pretrained_weights, self.training.backbone)
        path = Path(self.checkpoint)
        if not self.checkpoint.strip() or path.is_dir():
            raise ArgumentError("checkpoint", f"{self.checkpoint!r} is a folder; expected a checkpoint file name")
        if path.parent.exists() and not path.parent.is_dir():
            raise ArgumentError("checkpoint", f"{path.parent} is not a folder")


class DiagnoseConfig(FlowConfig):
    """Model diagnosis (paper Tables III, IV): several checkpoints evaluated on one dataset."""

    dataset: str
    models: tuple[str, ...]
    split_rule: SplitRule = None       # Recall@1 on the training and the evaluation classes under this rule
    out: str = "runs/diagnosis"
    methods: tuple[str, ...] = DEFAULT_METHODS
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 128
    device: str = "auto"
    cluster: str = ""  # as LocalizationConfig.cluster, for each model's localization run

    _dataset = field_validator("dataset")(check_dataset)
    _split_rule = field_validator("split_rule")(check_split_rule)
    _out = field_validator("out")(check_results_location)
    _methods = field_validator("methods")(check_methods)
    _device = field_validator("device")(check_device)
    _cluster = field_validator("cluster")(check_cluster)

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one checkpoint")
        if len(set(value)) != len(value):
            raise ValueError("a checkpoint is listed twice")
        return tuple(check_model(spec) for spec in value)

    def check_inputs(self) -> None:
        dataset_present(self.dataset)
        for spec in self.models:
            model_present(spec, "models")
        folder_or_creatable(self.out)
        device_present(self.device)
        cluster_present(self.cluster)


class StudyBuildConfig(FlowConfig):
    """Build a human study from its definition (no AWS call); ``source`` replaces the definition's source run."""

    definition: str
    out: str
    source: str | None = None


class StudyConfig(FlowConfig):
    """A built study folder, and whether it talks to production MTurk (sandbox by default)."""

    folder: str
    live: bool = False


class ExplainConfig(FlowConfig):
    """``eml explain``: one pair of images, every registered map method, point-specific maps on request."""

    query: str
    retrieved: str
    model: str
    out: str
    point_query: tuple[float, float] | None = None
    point_retrieved: tuple[float, float] | None = None
    similarity: str = "cosine"
    device: str = "auto"
    input_size: tuple[int, int] | Literal["native", "default"] = "default"
    methods: tuple[str, ...] = ALL_METHODS
    allow_random_init: bool = False

    _model = field_validator("model")(check_model)
    _device = field_validator("device")(check_device)
    _methods = field_validator("methods")(check_methods)

    def check_inputs(self) -> None:
        model_present(self.model)
        folder_or_creatable(self.out)
        device_present(self.device)

    @field_validator("similarity")
    @classmethod
    def _similarity(cls, value: str) -> str:
        return _choices((value,), ("cosine", "dot"), "similarity")[0]

    @field_validator("point_query", "point_retrieved")
    @classmethod
    def _point(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(math.isfinite(v) for v in value):
            raise ValueError(f"expected finite X,Y pixel coordinates, got {value}")
        return value

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, value):
        if isinstance(value, tuple) and min(value) < 1:
            raise ValueError(f"must be positive, got {value[0]}x{value[1]}")
        return value


class DemoConfig(FlowConfig):
    """The main job on the embedded default data."""

    out: str = "out/demo"
    explain_model: str = "mobilenet_v2:gap"

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        if value.startswith("s3://"):
            raise ValueError("the demo writes to a local folder")
        return check_results_location(value)

    def check_inputs(self) -> None:
        folder_or_creatable(self.out)

    _model = field_validator("explain_model")(check_model)


class StudyAnalysisConfig(FlowConfig):
    """Analyse a built study's answers. ``include_flagged`` keeps the answers of flagged workers and held
    assignments (pilots); ``results`` (a results root) also records the analysis there as a run of kind
    ``study``, with a catalog row, for the review dashboard and the trend across analyses."""

    folder: str
    include_flagged: bool = False
    results: str | None = None

    @field_validator("results")
    @classmethod
    def _results(cls, value: str | None) -> str | None:
        return None if value is None else check_results_location(value)

    def check_inputs(self) -> None:
        if self.results is not None:
            folder_or_creatable(self.results, "results")


# ---------------------------------------------------------------------------------------------
# cross-view orientation (paper Section VII-A, Figs. 8, 9)

CROSSVIEW_DATASETS = ("cvusa", "cvact", "synthetic")
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def check_crossview_dataset(value: str) -> str:
    """The form of a cross-view dataset spec: ``cvusa:PATH``, ``cvact:PATH`` or ``synthetic[:PATH]``."""
    if not isinstance(value, str):
        raise ValueError(f"expected cvusa:PATH, cvact:PATH or synthetic[:PATH], got {value!r}")
    kind, _, argument = value.partition(":")
    if kind not in CROSSVIEW_DATASETS or (kind != "synthetic" and not argument.strip()):
        raise ValueError(f"cross-view dataset spec {value!r}: expected cvusa:PATH, cvact:PATH or synthetic[:PATH]")
    return value


def check_crossview_model(value: str) -> str:
    """The form of a cross-view model spec (a checkpoint file is checked by ``check_inputs``)."""
    from eml_core.crossview_model import check_crossview_model_spec

    return _form(check_crossview_model_spec, value)


def crossview_dataset_present(spec: str, field: str = "dataset") -> None:
    from eml_core.crossview_data import check_crossview_spec

    _present(field, check_crossview_spec, spec)


def crossview_model_present(spec: str, field: str = "model") -> None:
    from eml_core.crossview_model import check_crossview_model_spec

    _present(field, check_crossview_model_spec, spec)


def _split_name(value: str | None) -> str | None:
    if value is not None and not SPLIT_NAME.match(value):
        raise ValueError(f"expected a split name (letters, digits, _), got {value!r}")
    return value


class OrientationConfig(FlowConfig):
    """Cross-view orientation (paper Section VII-A, Figs. 8, 9): rotate each aerial image of a split by known
    angles and recover the angle from the overall and point-specific maps of a two-branch model.

    Rotations: ``rotations`` (the same angles for every pair), or ``random_rotations`` angles per pair drawn
    uniformly in [0, 360) from (``seed``, pair id), so any sharding gives a pair the same angles. Giving
    ``rotations`` alone switches the random draw off; giving both is an error.
    """

    dataset: str = "synthetic"
    # a backbone name is the default two-branch network: ImageNet branches, the shared FC untrained (seed 0)
    model: str = "mobilenet_v2"
    out: str = "runs/orientation"
    split: str | None = None                   # None: CVUSA's (and the embedded pairs') "val", CVACT's "all"
    rotations: tuple[float, ...] = ()
    random_rotations: Annotated[int, Field(ge=1, le=360)] | None = 1
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    overall_maps: tuple[str, ...] = ("decomposition", "decomposition_bias")
    top_k: Annotated[int, Field(ge=0, le=10_000)] = 10   # 0: no point_specific_top{k} method
    fill: Literal["reflect", "disc"] = "reflect"
    max_pairs: Annotated[int, Field(ge=1)] | None = None  # the first N pairs of the split (quick runs)
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 128
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    examples: Annotated[int, Field(ge=0, le=100)] = 2      # Fig. 8 panels
    device: str = "auto"

    _dataset = field_validator("dataset")(check_crossview_dataset)
    _model = field_validator("model")(check_crossview_model)
    _out = field_validator("out")(check_results_location)
    _device = field_validator("device")(check_device)
    _split = field_validator("split")(_split_name)

    @model_validator(mode="before")
    @classmethod
    def _one_rotation_rule(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("rotations") and "random_rotations" not in values:
            values = {**values, "random_rotations": None}
        return values

    # rules across fields raise ArgumentError naming the field (pydantic passes it through), as the nested
    # training recipe does
    @model_validator(mode="after")
    def _rules(self) -> OrientationConfig:
        if self.rotations and self.random_rotations is not None:
            raise ArgumentError("rotations", "give rotations or random_rotations, not both")
        if not self.rotations and self.random_rotations is None:
            raise ArgumentError("rotations", "give rotations (angles in degrees) or random_rotations (angles per "
                                             "pair)")
        if self.dataset.startswith("cvact:") and self.split not in (None, "all"):
            raise ArgumentError("split", f"CVACT pairs are all in split 'all', not {self.split!r}")
        return self

    @field_validator("rotations")
    @classmethod
    def _rotations(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"angles must be finite numbers of degrees, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"an angle is repeated: {list(value)}")
        return tuple(float(v) for v in value)

    @field_validator("overall_maps")
    @classmethod
    def _overall_maps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from eml_core.orientation import OVERALL_MAPS

        return _choices(value, tuple(OVERALL_MAPS), "overall map")

    @property
    def split_name(self) -> str:
        """The split evaluated: ``split``, or the dataset's test split."""
        return self.split or ("all" if self.dataset.startswith("cvact:") else "val")

    def check_inputs(self) -> None:
        crossview_dataset_present(self.dataset)
        crossview_model_present(self.model)
        folder_or_creatable(self.out)
        device_present(self.device)


class CrossViewTrainConfig(FlowConfig):
    """Training the two-branch model (CVM-Net's loss, aerial images randomly rotated): the dataset and splits,
    where the checkpoint goes, the device, and the recipe (:class:`eml_core.crossview_training.
    CrossViewTrainingConfig`, nested so its fields are defined once: cached features of frozen backbones by
    default, ``fine_tune`` for GPUs)."""

    dataset: str = "synthetic"
    checkpoint: str = "runs/models/crossview.pt"
    train_split: str = "train"
    validation_split: str | None = "val"      # Recall@K after training; None: no validation
    device: str = "auto"
    training: CrossViewTrainingConfig = Field(default_factory=CrossViewTrainingConfig)

    _dataset = field_validator("dataset")(check_crossview_dataset)
    _device = field_validator("device")(check_device)
    _train_split = field_validator("train_split")(_split_name)
    _validation_split = field_validator("validation_split")(_split_name)

    @model_validator(mode="after")
    def _rules(self) -> CrossViewTrainConfig:
        if self.dataset.startswith("cvact:") and (self.train_split != "all" or self.validation_split not in
                                                  (None, "all")):
            raise ArgumentError("train_split", "CVACT pairs are all in split 'all' (train and validate on it, or "
                                               "give no validation split)")
        return self

    def check_inputs(self) -> None:
        crossview_dataset_present(self.dataset)
        device_present(self.device)
        path = Path(self.checkpoint)
        if not self.checkpoint.strip() or path.is_dir():
            raise ArgumentError("checkpoint", f"{self.checkpoint!r} is a folder; expected a checkpoint file name")
        if path.parent.exists() and not path.parent.is_dir():
            raise ArgumentError("checkpoint", f"{path.parent} is not a folder")


# interactive retrieval (paper Section VII-B): the gallery index, region queries, the composite benchmark

# the command line's short names (the issue's) for the methods of eml_core.region_retrieval
RETRIEVAL_METHOD_ALIASES = {"partial": "partial_centre", "partial_mean": "partial_box_mean"}


def check_retrieval_methods(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Method names of :data:`eml_core.region_retrieval.RETRIEVAL_METHODS` (short aliases accepted); None: every
    method that applies to each query's region."""
    from eml_core.region_retrieval import RETRIEVAL_METHODS

    if value is None:
        return None
    names = tuple(RETRIEVAL_METHOD_ALIASES.get(v, v) for v in value)
    allowed = (*RETRIEVAL_METHODS, *RETRIEVAL_METHOD_ALIASES)
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown method {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    return _choices(names, tuple(RETRIEVAL_METHODS), "method")


def check_local_path(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip() or "://" in value or "\x00" in value):
        raise ValueError(f"expected a local file or folder, got {value!r}")
    return value


def _file_present(path: str, field: str, what: str) -> None:
    if not Path(path).exists():
        raise ArgumentError(field, f"{path}: {what} does not exist")
    if not Path(path).is_file():
        raise ArgumentError(field, f"{path}: is not a file ({what} expected)")


def index_present(location: str, field: str = "index") -> None:
    """A gallery index: ``index.json`` in a local folder (an S3 location is checked when the run opens it)."""
    if location.startswith("s3://"):
        return
    folder = Path(location)
    if not folder.is_dir():
        raise ArgumentError(field, f"{location}: no such folder (build the index with `eml index build`)")
    if not (folder / "index.json").is_file():
        raise ArgumentError(field, f"{location}: no gallery index here (no index.json; build one with "
                                   f"`eml index build`)")


# the splits each dataset kind has (folder datasets: whatever their CSV says, checked when they load)
DATASET_SPLITS = {"market1501": ("train", "query", "gallery"), "faces": ("train", "test"), "cub": ("train", "test"),
                  "synthetic": ("train", "test")}


class IndexBuildConfig(FlowConfig):
    """``eml index build``: embed a gallery once into an index (only images it does not hold yet)."""

    gallery: str
    model: str
    out: str
    splits: tuple[str, ...] | None = None  # None: every split of the dataset
    similarity: Literal["cosine", "dot"] = "cosine"
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    commit_every: Annotated[int, Field(ge=1, le=100_000)] = 16  # shards embedded between two commits
    device: str = "auto"

    _gallery = field_validator("gallery")(check_dataset)
    _model = field_validator("model")(check_model)
    _out = field_validator("out")(check_results_location)
    _device = field_validator("device")(check_device)

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", v) for v in value):
            raise ValueError(f"expected split names such as gallery, test, train, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"splits are repeated: {', '.join(value)}")
        return tuple(value)

    def model_post_init(self, __context) -> None:
        known = DATASET_SPLITS.get(self.gallery.partition(":")[0])
        if self.splits is not None and known is not None:
            unknown = [s for s in self.splits if s not in known]
            if unknown:
                raise ArgumentError("splits", f"{', '.join(map(repr, unknown))} not a split of "
                                              f"{self.gallery.partition(':')[0]} data ({', '.join(known)})")

    def check_inputs(self) -> None:
        dataset_present(self.gallery, "gallery")
        model_present(self.model)
        folder_or_creatable(self.out)
        device_present(self.device)


class RetrievalConfig(FlowConfig):
    """``eml retrieve`` / the ``interactive_retrieval`` flow: rank an index for query regions.

    Queries come from a file (``queries``: CSV or Parquet, :mod:`eml_core.retrieval_queries`) or one image with
    a ``box`` or a ``point``. ``model`` defaults to the model recorded in the index (its fingerprint must match
    either way); ``root`` overrides where the index's images are (they moved)."""

    index: str
    out: str = "runs/retrieval"
    queries: str | None = None
    query: str | None = None
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    label: int | None = None  # of the single query's region content
    model: str | None = None
    methods: tuple[str, ...] | None = None
    k: Annotated[int, Field(ge=1, le=1000)] = 10
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 64
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    montages: Annotated[int, Field(ge=0, le=100_000)] = 50  # montage PNGs written (the first queries)
    montage_k: Annotated[int, Field(ge=1, le=50)] = 5        # retrieved images per method in a montage
    point_maps: bool = False  # overlay the region's point-specific maps on the partial methods' images (Fig. 13)
    root: str | None = None
    device: str = "auto"

    _index = field_validator("index")(check_results_location)
    _out = field_validator("out")(check_results_location)
    _device = field_validator("device")(check_device)
    _paths = field_validator("queries", "query", "root")(check_local_path)
    _methods = field_validator("methods")(check_retrieval_methods)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return None if value is None else check_model(value)

    @field_validator("box")
    @classmethod
    def _box(cls, value):
        if value is None:
            return None
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"expected finite X0,Y0,X1,Y1 pixel edges, got {value}")
        x0, y0, x1, y1 = value
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty (needs X0 < X1 and Y0 < Y1)")
        if min(value) < 0:
            raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} has a negative coordinate")
        return value

    @field_validator("point")
    @classmethod
    def _point(cls, value):
        if value is not None and not all(math.isfinite(v) and v >= 0 for v in value):
            raise ValueError(f"expected X,Y pixel coordinates >= 0, got {value}")
        return value

    def model_post_init(self, __context) -> None:
        # ArgumentError (not ValueError) passes through pydantic, so the message names the field, not the class
        if (self.queries is None) == (self.query is None):
            raise ArgumentError("queries" if self.queries else "query",
                                "give either a query file (queries) or one query image (query), not both")
        if self.query is not None and (self.box is None) == (self.point is None):
            raise ArgumentError("box" if self.box else "point",
                                "give the query's region: a box X0,Y0,X1,Y1 or a point X,Y (one of them)")
        if self.point is not None and self.methods is not None:
            from eml_core.region_retrieval import RETRIEVAL_METHODS

            boxed = [m for m in self.methods if RETRIEVAL_METHODS[m].needs_box]
            if boxed:
                raise ArgumentError("methods", f"{', '.join(boxed)} need a box region; the query has a point")
        if self.queries is not None and (self.box, self.point, self.label) != (None, None, None):
            raise ArgumentError("queries", "box, point and label belong to a single query image; a query file has "
                                           "its own columns")

    def check_inputs(self) -> None:
        from eml_core.retrieval_queries import check_query_columns, query_file_columns

        index_present(self.index)
        if self.queries is not None:
            _file_present(self.queries, "queries", "query file")
            _present("queries", lambda: check_query_columns(query_file_columns(self.queries), self.queries))
        if self.query is not None:
            _file_present(self.query, "query", "query image")
            self._check_region()
        if self.model is not None:
            model_present(self.model)
        if self.root is not None and not Path(self.root).is_dir():
            raise ArgumentError("root", f"{self.root}: no such folder")
        folder_or_creatable(self.out)
        device_present(self.device)


    def _check_region(self) -> None:
        """The single query's region must lie inside its image (read from the image's header)."""
        from eml_core.datasets import image_size
        from eml_core.region_retrieval import Region

        try:
            size = image_size(Path(self.query))  # type: ignore[arg-type]
        except (OSError, EmlError, Warning) as error:  # PIL: unidentified image; a decompression bomb (a warning)
            raise ArgumentError("query", f"{self.query}: not a readable image ({error})") from None
        if self.box is not None:
            _present("box", Region.box(*self.box).check, size, "box")
        else:
            assert self.point is not None
            _present("point", Region.point(*self.point).check, size, "point")


class RetrievalBenchmarkConfig(FlowConfig):
    """``eml evaluate retrieval``: precision@k and mAP of the retrieval methods on a benchmark with a ground truth:
    ``composite`` (two-object images generated from the embedded data) or ``market1501`` (re-id rules)."""

    model: str
    out: str = "runs/retrieval_benchmark"
    benchmark: Literal["composite", "market1501"] = "composite"
    dataset: str | None = None      # market1501:PATH
    data: str = "data/generated/composites"  # where composite images are generated (a local folder)
    gallery_images: Annotated[int, Field(ge=1, le=1_000_000)] = 240
    query_images: Annotated[int, Field(ge=1, le=100_000)] = 24
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 1
    methods: tuple[str, ...] | None = None  # None: all five
    k: Annotated[int, Field(ge=1, le=1000)] = 10
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    montages: Annotated[int, Field(ge=0, le=100_000)] = 8
    device: str = "auto"

    _model = field_validator("model")(check_model)
    _out = field_validator("out")(check_results_location)
    _data = field_validator("data")(check_local_path)
    _device = field_validator("device")(check_device)
    _methods = field_validator("methods")(check_retrieval_methods)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        return None if value is None else check_dataset(value)

    def model_post_init(self, __context) -> None:
        if self.benchmark == "market1501" and (self.dataset is None or not self.dataset.startswith("market1501:")):
            raise ArgumentError("dataset", "the market1501 benchmark needs dataset market1501:PATH")
        if self.benchmark == "composite" and self.dataset is not None:
            raise ArgumentError("dataset", "the composite benchmark generates its own images; dataset is for "
                                           "market1501")

    def check_inputs(self) -> None:
        model_present(self.model)
        if self.dataset is not None:
            dataset_present(self.dataset)
        folder_or_creatable(self.data, "data")
        folder_or_creatable(self.out)
        device_present(self.device)


class FaithfulnessConfig(FlowConfig):
    """Faithfulness and sanity of the map methods (eml_core.faithfulness, eml_core.sanity): deletion / insertion
    on the similarity of pairs, the point-specific ratio, cascading model randomization.

    Pairs come from the pairs of a localization run (``localization_run``: a run folder or a results root,
    its images looked up in ``dataset``), or are made from ``dataset``: every image of ``split`` with its
    nearest (or a seeded random) same-class partner, then at most ``pairs`` of them, one per class first."""

    dataset: str = "synthetic"
    split_rule: SplitRule = None       # which images form `split` (None: the dataset kind's default, as elsewhere)
    model: str = "mobilenet_v2:gap_fc"
    out: str = "runs/faithfulness"
    localization_run: str | None = None
    split: str = "test"
    pairing: str = "nearest"
    pairs: Annotated[int, Field(ge=1, le=100_000)] = 16
    methods: tuple[str, ...] = DEFAULT_METHODS
    removals: tuple[str, ...] = ("blur",)
    steps: tuple[float, ...] = FAITHFULNESS_STEPS
    sides: tuple[str, ...] = SIDES
    points_per_pair: Annotated[int, Field(ge=0, le=64)] = 3
    region_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    sanity: bool = True
    shard_size: Annotated[int, Field(ge=1, le=10_000)] = 8
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 128
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    device: str = "auto"

    _dataset = field_validator("dataset")(check_dataset)
    _model = field_validator("model")(check_model)
    _split_rule = field_validator("split_rule")(check_split_rule)
    _out = field_validator("out")(check_results_location)
    _methods = field_validator("methods")(check_methods)
    _device = field_validator("device")(check_device)

    @field_validator("localization_run")
    @classmethod
    def _localization_run(cls, value: str | None) -> str | None:
        return None if value is None else check_results_location(value)

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        return _choices((value,), SPLITS, "split")[0]

    @field_validator("pairing")
    @classmethod
    def _pairing(cls, value: str) -> str:
        return _choices((value,), PAIRINGS, "pairing")[0]

    @field_validator("removals")
    @classmethod
    def _removals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(value, tuple(REMOVALS), "removal")

    @field_validator("sides")
    @classmethod
    def _sides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(value, SIDES, "side")

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        try:
            return check_steps(value)
        except ArgumentError as error:
            raise ValueError(error.problem) from None

    def check_inputs(self) -> None:
        dataset_present(self.dataset)
        model_present(self.model)
        folder_or_creatable(self.out)
        device_present(self.device)
        if self.localization_run is not None:
            from eml_core.results import resolve_run

            _present("localization_run", resolve_run, self.localization_run, "localization")
