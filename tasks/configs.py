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
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eml_core.datasets import check_dataset_spec
from eml_core.errors import ArgumentError, EmlError
from eml_core.methods import DEFAULT_METHODS, REGISTRY
from eml_core.sweep import FINE_THRESHOLDS

DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SPLITS = ("train", "test")
SIDES = ("query", "retrieved")
PAIRINGS = ("nearest", "random")

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
    """A local folder (not an existing file) or ``s3://bucket[/prefix]`` with a valid bucket name."""
    if not isinstance(out, str) or not out.strip():
        raise ValueError("expected a folder or s3://bucket/prefix")
    if out.startswith("s3://"):
        bucket = out[len("s3://"):].partition("/")[0]
        if not S3_BUCKET.match(bucket):
            raise ValueError(f"{out!r}: {bucket!r} is not a valid S3 bucket name")
        return out
    if "://" in out:
        raise ValueError(f"{out!r}: only local folders and s3:// locations are supported")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
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


class FlowConfig(BaseModel):
    """Base of the flow configurations: immutable, no unknown fields, strict where strings must stay strings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class LocalizationConfig(FlowConfig):
    """Weakly supervised localization (paper Tables I, II): what to explain, how to pair, how to sweep."""

    dataset: str = "synthetic"
    model: str = "mobilenet_v2:gap_fc"
    out: str = "runs/localization"
    methods: tuple[str, ...] = DEFAULT_METHODS
    splits: tuple[str, ...] = SPLITS
    localize_splits: tuple[str, ...] | None = None
    pairing: str = "nearest"
    sides: tuple[str, ...] = ("query",)
    shard_size: Annotated[int, Field(ge=1, le=100_000)] = 128
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    connectivity: int = 4
    thresholds: tuple[float, ...] = FINE_THRESHOLDS
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    device: str = "auto"

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        try:
            check_dataset_spec(value)
        except EmlError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        from eml_core.models import check_model_spec

        try:
            check_model_spec(value)
        except EmlError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        return check_results_location(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(value, tuple(REGISTRY), "method")

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

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise ValueError(f"expected cpu, cuda, cuda:N or auto, got {value!r}")
        return value
