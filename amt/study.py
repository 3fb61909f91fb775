"""Study definitions: a YAML or JSON file, validated by pydantic models with one-line errors naming the field.

Example (``data/studies/overall_map_demo.yaml``)::

    study_id: cub-overall-decomposition-vs-gradcam
    kind: overall_map                 # or: retrieval
    methods: [decomposition, gradcam] # the two robots; which one is "A" is randomised per item
    source: runs/cub/localization     # overall_map: a localization run; retrieval: a retrieval run (eml retrieve)
    items: 40                         # comparison items drawn (seeded) from the source
    items_per_hit: 10
    assignments_per_hit: 9
    reward_usd: 0.50                  # whole cents: MTurk pays in cents (0.115 is refused)
    catch_trial_rate: 0.1             # share of extra items with a known answer
    seed: 0
    budget_usd: 60.0                  # hard cap: launching is refused when the cost exceeds it
    target_workers: 40
    qualifications: {approval_rate: 95, approved_hits: 500, locales: [US, GB, CA, AU], exclude_previous: true}
    stimuli: {bucket: my-bucket, prefix: studies, url_mode: public}   # or url_mode: presigned

A study file is untrusted input: unknown fields are refused, numbers must be
numbers (``"5"`` is not 5, ``true`` is not 1), strings must be strings, and every
value has a range. Errors read ``study.yaml: field 'qualifications.approved_hits':
...`` on one line.
"""

from __future__ import annotations

import ipaddress
import json
import re
import reprlib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from amt.money import whole_cents
from eml_core.errors import EmlError

KINDS = ("overall_map", "retrieval")
URL_MODES = ("public", "presigned")
STUDY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,40}$"
MAX_DEFINITION_BYTES = 1 << 20  # a study definition is a few hundred bytes; anything near 1 MB is not one


class StudyError(EmlError):
    """A study definition (or a study folder) is invalid; the message names the file and field."""


class FieldProblem(Exception):
    """A cross-field check failed; carries the field to name (pydantic would name the whole model)."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a non-empty string")
    return text


# Non-blank strings (never a number turned into text) of at most N characters. Written out per length: the
# bound must come before the non-blank check for pydantic to report a too-long string as such.
Text100 = Annotated[StrictStr, Field(max_length=100), AfterValidator(_not_blank)]
Text128 = Annotated[StrictStr, Field(max_length=128), AfterValidator(_not_blank)]
Text1000 = Annotated[StrictStr, Field(max_length=1000), AfterValidator(_not_blank)]
Text2000 = Annotated[StrictStr, Field(max_length=2000), AfterValidator(_not_blank)]
Text4096 = Annotated[StrictStr, Field(max_length=4096), AfterValidator(_not_blank)]


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# US dollars as a finite float (strict: "5" and true are not money); each field adds its bounds, Field(ge=, le=).
Money = Annotated[float, Field(strict=True, allow_inf_nan=False)]


StrictNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int is a number too; "5" and true are not
MethodName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")]

_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def check_bucket_name(name: str) -> str:
    """S3's bucket naming rules (general purpose buckets), and no dots.

    3-63 characters of lowercase letters, digits, '-' (and '.'); begins and ends with a
    letter or digit; not an IP address; none of S3's reserved prefixes and suffixes.
    Dots are S3-legal but refused here: HIT pages load images from
    ``https://<bucket>.s3.amazonaws.com``, whose certificate does not cover dotted names.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        raise ValueError("an S3 bucket name is 3-63 lowercase letters, digits and '-', beginning and ending with a "
                         "letter or digit")
    if "." in name:
        raise ValueError("dots in a bucket name break the HTTPS URLs HIT pages load images from; use '-'")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError("an S3 bucket name must not be an IP address")
    if name.startswith(_S3_RESERVED_PREFIXES) or name.endswith(_S3_RESERVED_SUFFIXES):
        raise ValueError(f"S3 reserves the prefixes {_S3_RESERVED_PREFIXES} and suffixes {_S3_RESERVED_SUFFIXES}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Qualifications(_Strict):
    approval_rate: Annotated[StrictInt, Field(ge=0, le=100)] = 95     # PercentAssignmentsApproved >= this
    approved_hits: Annotated[StrictInt, Field(ge=0, le=10**9)] = 500  # NumberHITsApproved >= this
    locales: tuple[StrictStr, ...] = ("US",)
    exclude_previous: StrictBool = True  # workers who took part in an earlier eml study are excluded

    @field_validator("locales", mode="after")
    @classmethod
    def _country_codes(cls, locales: tuple[str, ...]) -> tuple[str, ...]:
        if len(locales) > 30 or not all(re.fullmatch(r"[A-Z]{2}", c) for c in locales):
            raise ValueError("must list ISO 3166 two-letter country codes, e.g. [US, GB] (at most 30)")
        return locales


class StimulusHosting(_Strict):
    bucket: Annotated[StrictStr, Field(max_length=63)] | None = None
    prefix: Annotated[StrictStr, Field(min_length=1, max_length=200,
                                       pattern=r"^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$")] = "eml-studies"
    url_mode: Literal["public", "presigned"] = "public"  # public-read objects, or presigned URLs
    presign_seconds: Annotated[StrictInt, Field(ge=3600, le=7 * 24 * 3600)] = 7 * 24 * 3600  # SigV4: 7 days at most

    @field_validator("bucket", mode="after")
    @classmethod
    def _bucket(cls, bucket: str | None) -> str | None:
        return None if bucket is None else check_bucket_name(bucket)

    @field_validator("prefix", mode="after")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if any(part in (".", "..") for part in prefix.strip("/").split("/")):
            raise ValueError("must not contain '.' or '..' path parts")
        return prefix


def _cents_of(usd: float, field: str) -> int:
    """A validated dollar amount in integer cents (the field validators accept whole cents only)."""
    cents = whole_cents(usd)
    if cents is None:
        raise StudyError(f"field {field!r}: {usd} is not a whole number of cents")
    return cents


class Study(_Strict):
    study_id: StrictStr
    kind: Literal["overall_map", "retrieval"]
    methods: tuple[MethodName, ...]  # exactly two (checked below, naming the field)
    source: Annotated[Text4096, AfterValidator(_no_nul)]
    items: Annotated[StrictInt, Field(ge=1, le=100_000)]
    items_per_hit: Annotated[StrictInt, Field(ge=1, le=50)] = 10
    assignments_per_hit: Annotated[StrictInt, Field(ge=1, le=1000)] = 9
    reward_usd: Annotated[Money, Field(ge=0.01, le=100.0)] = 0.5
    bonus_usd: Annotated[Money, Field(ge=0.0, le=100.0)] = 0.0  # per assignment, budgeted up front
    catch_trial_rate: Annotated[StrictNumber, Field(ge=0.0, le=0.5)] = 0.1
    seed: Annotated[StrictInt, Field(ge=0, le=2**31)] = 0
    budget_usd: Annotated[Money, Field(ge=0.0, le=1e6)] = 0.0
    target_workers: Annotated[StrictInt, Field(ge=1, le=100_000)] = 40
    title: Text128 = "Which robot explains its decision better?"
    description: Text2000 = "Compare how two robots explain why two images look alike. About 3 minutes."
    keywords: Text1000 = "image, comparison, explanation, survey"
    duration_seconds: Annotated[StrictInt, Field(ge=30, le=24 * 3600)] = 1200  # time a worker has for one HIT
    lifetime_seconds: Annotated[StrictInt, Field(ge=60, le=365 * 24 * 3600)] = 3 * 24 * 3600  # HITs visible 3 days
    auto_approval_seconds: Annotated[StrictInt, Field(ge=0, le=30 * 24 * 3600)] = 3 * 24 * 3600
    # "Both robots think the two images contain the same <subject>"
    subject: Text100 = "bird species"
    top_k: Annotated[StrictInt, Field(ge=1, le=10)] = 4  # retrieval: retrieved images shown per robot
    highlight_fraction: Annotated[StrictNumber, Field(ge=0.001, le=0.5)] = 0.02  # overall_map: share highlighted
    qualifications: Qualifications = Field(default_factory=Qualifications)
    stimuli: StimulusHosting = Field(default_factory=StimulusHosting)
    path: StrictStr = ""  # where the definition came from (not a field of the file)

    @field_validator("qualifications", "stimuli", mode="before")
    @classmethod
    def _null_means_defaults(cls, value):
        """``qualifications:`` left empty in YAML reads as null: the defaults apply."""
        return {} if value is None else value

    @field_validator("study_id", mode="after")
    @classmethod
    def _study_id(cls, study_id: str) -> str:
        if not re.match(STUDY_ID_PATTERN, study_id):
            raise ValueError("3-41 characters of lowercase letters, digits and '-'")
        return study_id

    @field_validator("methods", mode="after")
    @classmethod
    def _two_different(cls, methods: tuple[str, str]) -> tuple[str, str]:
        if len(methods) != 2 or methods[0] == methods[1]:
            raise ValueError("must list exactly two different method names")
        return methods

    @field_validator("reward_usd", "bonus_usd", "budget_usd", mode="after")
    @classmethod
    def _whole_cents(cls, value):
        if whole_cents(value) is None:
            raise ValueError("must be a whole number of cents (MTurk pays in cents; nothing is rounded for you)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Study":
        if self.items_per_hit > self.items + self.catch_items:
            raise FieldProblem("items_per_hit", "is larger than the number of items")
        if self.stimuli.url_mode == "presigned" and \
                self.lifetime_seconds + self.duration_seconds > self.stimuli.presign_seconds:
            raise FieldProblem("lifetime_seconds", f"HITs would outlive their presigned images "
                                                   f"({self.stimuli.presign_seconds} s): shorten lifetime_seconds or "
                                                   f"use url_mode: public")
        return self

    # --- derived values ----------------------------------------------------------------------------
    @property
    def catch_items(self) -> int:
        return round(self.items * self.catch_trial_rate)

    @property
    def hits(self) -> int:
        total = self.items + self.catch_items
        return -(-total // self.items_per_hit)

    @property
    def reward_cents(self) -> int:
        return _cents_of(self.reward_usd, "reward_usd")

    @property
    def bonus_cents(self) -> int:
        return _cents_of(self.bonus_usd, "bonus_usd")

    @property
    def budget_cents(self) -> int:
        return _cents_of(self.budget_usd, "budget_usd")

    def to_dict(self) -> dict:
        """JSON-ready (as stored in the ledger, ``path`` included)."""
        return self.model_dump(mode="json")


# --- errors ----------------------------------------------------------------------------------------
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxdict = _short.maxtuple = 4
_short.maxlevel = 2
_FRIENDLIER = {"tuple_type": "should be a list", "list_type": "should be a list", "dict_type": "should be a mapping",
               "model_type": "should be a mapping"}
_SUBMODELS: dict[str, type[BaseModel]] = {"qualifications": Qualifications, "stimuli": StimulusHosting}


def field_name(loc) -> str:
    return ".".join(str(part) for part in loc) if loc else "(top level)"


def first_error(error: ValidationError) -> dict:
    """The error to report: an unknown field first, then a missing one, then the first in field order."""
    rank = {"extra_forbidden": 0, "missing": 1}
    return dict(min(error.errors(), key=lambda e: rank.get(e["type"], 2)))


def describe_error(error: dict, known: dict | None = None) -> str:
    """One line for one pydantic error: ``field 'x.y': problem, got VALUE``."""
    name = field_name(error["loc"])
    if error["type"] == "missing":
        return f"field {name!r}: is required"
    if error["type"] == "extra_forbidden":
        fields = (known or {}).get(tuple(error["loc"][:-1]))
        return f"field {name!r}: unknown field" + (f" (known: {', '.join(fields)})" if fields else "")
    message = _FRIENDLIER.get(error["type"], error["msg"].removeprefix("Value error, "))
    return f"field {name!r}: {message}, got {_short.repr(error.get('input'))}"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def known_study_fields(prefix: tuple = ()) -> dict:
    known = {prefix: sorted(set(Study.model_fields) - {"path"})}
    for name, model in _SUBMODELS.items():
        known[(*prefix, name)] = sorted(model.model_fields)
    return known


def study_from_dict(raw, where: str = "study") -> Study:
    """Validate a parsed definition; ``where`` (the file) starts every error message."""
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: field '(top level)': expected a mapping of fields, got "
                         f"{type(raw).__name__} {_short.repr(raw)}")
    raw = {k: v for k, v in raw.items() if k != "path"}  # a saved Study carries where it came from
    try:
        return Study.model_validate({**raw, "path": str(where)})
    except ValidationError as error:
        raise StudyError(one_line(f"{where}: {describe_error(first_error(error), known_study_fields())}")) from None
    except FieldProblem as problem:
        raise StudyError(one_line(f"{where}: field {problem.field!r}: {problem.problem}")) from None


# --- files -----------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "found an unhashable key",
                                                    key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_short.repr(key)}",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _json_object(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_definition(text: str, is_json: bool, where: str):
    """The parsed document; StudyError (one line) when it is not valid JSON / YAML."""
    try:
        if is_json:
            return json.loads(text, object_pairs_hook=_json_object)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no tags that run code
    except json.JSONDecodeError as error:
        raise StudyError(f"{where}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        detail = getattr(error, "problem", None) or str(error)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise StudyError(one_line(f"{where}: not valid YAML ({at}{detail})")) from None
    except RecursionError:
        raise StudyError(f"{where}: nested too deeply to be a study definition") from None
    except (ValueError, TypeError, OverflowError) as error:  # duplicate JSON keys, impossible YAML dates...
        raise StudyError(one_line(f"{where}: not valid {'JSON' if is_json else 'YAML'} ({error})")) from None


def read_bounded_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of an untrusted file, reading at most ``limit`` + 1 bytes (never a huge file into memory);
    StudyError naming the file when it cannot be read, is larger than ``limit`` or is not UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise StudyError(f"{path}: cannot be read ({error.strerror})") from None
    if len(data) > limit:
        size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit // 1024} KB"
        raise StudyError(f"{path}: larger than {size}; not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start})") from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study definition (``.json``: JSON; anything else: YAML)."""
    path = Path(path)
    if path.is_dir():
        raise StudyError(f"{path}: is a directory, not a study definition file")
    if not path.is_file():
        raise StudyError(f"{path}: study definition file does not exist")
    text = read_bounded_text(path, MAX_DEFINITION_BYTES, "study definition")
    if not text.strip():
        raise StudyError(f"{path}: is empty")
    raw = parse_definition(text, path.suffix.lower() == ".json", str(path))
    return study_from_dict(raw, str(path))
