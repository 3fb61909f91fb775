"""Study definitions: a YAML or JSON file, validated with errors that name the field.

Example (``data/studies/overall_map.yaml``)::

    study_id: cub-overall-decomposition-vs-gradcam
    kind: overall_map                 # or: retrieval
    methods: [decomposition, gradcam] # the two robots; which one is "A" is randomised per item
    source: runs/cub/localization     # overall_map: a localization run; retrieval: a rankings Parquet
    items: 40                         # comparison items drawn (seeded) from the source
    items_per_hit: 10
    assignments_per_hit: 9
    reward_usd: 0.50
    catch_trial_rate: 0.1             # share of extra items with a known answer
    seed: 0
    budget_usd: 60.0                  # hard cap: launching is refused when the estimate exceeds it
    target_workers: 40
    qualifications: {approval_rate: 95, approved_hits: 500, locales: [US, GB, CA, AU], exclude_previous: true}
    stimuli: {bucket: my-bucket, prefix: studies, url_mode: public}   # or url_mode: presigned
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from eml_core.errors import EmlError

KINDS = ("overall_map", "retrieval")
URL_MODES = ("public", "presigned")
STUDY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,40}$")


class StudyError(EmlError):
    """A study definition is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Qualifications:
    approval_rate: int = 95          # PercentAssignmentsApproved >= this
    approved_hits: int = 500         # NumberHITsApproved >= this
    locales: tuple[str, ...] = ("US",)
    exclude_previous: bool = True    # workers who took part in an earlier eml study are excluded


@dataclass(frozen=True)
class StimulusHosting:
    bucket: str | None = None
    prefix: str = "eml-studies"
    url_mode: str = "public"          # public-read objects, or presigned URLs
    presign_seconds: int = 7 * 24 * 3600  # SigV4 presigned URLs last at most 7 days


@dataclass(frozen=True)
class Study:
    study_id: str
    kind: str
    methods: tuple[str, str]
    source: str
    items: int
    items_per_hit: int = 10
    assignments_per_hit: int = 9
    reward_usd: float = 0.5
    bonus_usd: float = 0.0           # per assignment, budgeted up front
    catch_trial_rate: float = 0.1
    seed: int = 0
    budget_usd: float = 0.0
    target_workers: int = 40
    title: str = "Which robot explains its decision better?"
    description: str = "Compare how two robots explain why two images look alike. About 3 minutes."
    keywords: str = "image, comparison, explanation, survey"
    duration_seconds: int = 1200     # time a worker has for one HIT
    lifetime_seconds: int = 3 * 24 * 3600  # HITs visible for 3 days (presigned stimulus URLs last 7)
    auto_approval_seconds: int = 3 * 24 * 3600
    subject: str = "bird species"     # "Both robots think the two images contain the same <subject>"
    top_k: int = 4                   # retrieval: retrieved images shown per robot
    highlight_fraction: float = 0.02  # overall_map: top share of pixels highlighted
    qualifications: Qualifications = field(default_factory=Qualifications)
    stimuli: StimulusHosting = field(default_factory=StimulusHosting)
    path: str = ""

    @property
    def catch_items(self) -> int:
        return round(self.items * self.catch_trial_rate)

    @property
    def hits(self) -> int:
        total = self.items + self.catch_items
        return -(-total // self.items_per_hit)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["methods"] = list(self.methods)
        return data


def _need(condition: bool, where: str, field_name: str, problem: str) -> None:
    if not condition:
        raise StudyError(f"{where}: field {field_name!r}: {problem}")


def load_study(path: str | Path) -> Study:
    """Read and validate a study definition (YAML or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study definition file does not exist")
    try:
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise StudyError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({error})") from None
    return study_from_dict(raw, str(path))


def study_from_dict(raw, where: str = "study") -> Study:
    _need(isinstance(raw, dict), where, "(top level)", "expected a mapping of fields")
    raw = {k: v for k, v in raw.items() if k != "path"}  # a saved Study carries where it came from
    known = set(Study.__dataclass_fields__) - {"path"}
    unknown = sorted(set(raw) - known)
    _need(not unknown, where, unknown[0] if unknown else "", f"unknown field (known: {', '.join(sorted(known))})")
    for required in ("study_id", "kind", "methods", "source", "items"):
        _need(required in raw, where, required, "is required")
    _need(isinstance(raw["study_id"], str) and bool(STUDY_ID.match(raw["study_id"])), where, "study_id",
          "3-41 characters of lowercase letters, digits and '-'")
    _need(raw["kind"] in KINDS, where, "kind", f"must be one of {', '.join(KINDS)}, got {raw['kind']!r}")
    methods = raw["methods"]
    _need(isinstance(methods, list) and len(methods) == 2 and all(isinstance(m, str) and m for m in methods)
          and methods[0] != methods[1], where, "methods", "must list exactly two different method names")
    numbers = {
        "items": (int, 1, 100_000), "items_per_hit": (int, 1, 50), "assignments_per_hit": (int, 1, 1000),
        "reward_usd": ((int, float), 0.01, 100.0), "bonus_usd": ((int, float), 0.0, 100.0),
        "catch_trial_rate": ((int, float), 0.0, 0.5), "seed": (int, 0, 2**31), "budget_usd": ((int, float), 0.0, 1e6),
        "target_workers": (int, 1, 100_000), "duration_seconds": (int, 30, 24 * 3600),
        "lifetime_seconds": (int, 60, 365 * 24 * 3600), "auto_approval_seconds": (int, 0, 30 * 24 * 3600),
        "top_k": (int, 1, 10), "highlight_fraction": ((int, float), 0.001, 0.5),
    }
    values = dict(raw)
    for name, (kind, low, high) in numbers.items():
        if name in values:
            value = values[name]
            _need(isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high, where, name,
                  f"must be a number in [{low}, {high}], got {value!r}")
    for name in ("title", "description", "keywords", "source", "subject"):
        if name in values:
            _need(isinstance(values[name], str) and values[name].strip() != "", where, name, "must be a non-empty string")
    qualifications = dict(values.pop("qualifications", {}) or {})  # copies: the caller's mapping stays as given
    _need(isinstance(qualifications, dict), where, "qualifications", "must be a mapping")
    unknown = sorted(set(qualifications) - set(Qualifications.__dataclass_fields__))
    _need(not unknown, where, f"qualifications.{unknown[0]}" if unknown else "", "unknown field")
    if "approval_rate" in qualifications:
        _need(isinstance(qualifications["approval_rate"], int) and 0 <= qualifications["approval_rate"] <= 100, where,
              "qualifications.approval_rate", "must be an integer percentage")
    if "locales" in qualifications:
        locales = qualifications["locales"]
        _need(isinstance(locales, (list, tuple)) and all(isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c) for c in locales),
              where, "qualifications.locales", "must list ISO 3166 two-letter country codes, e.g. [US, GB]")
        qualifications["locales"] = tuple(locales)
    stimuli = dict(values.pop("stimuli", {}) or {})
    _need(isinstance(stimuli, dict), where, "stimuli", "must be a mapping")
    unknown = sorted(set(stimuli) - set(StimulusHosting.__dataclass_fields__))
    _need(not unknown, where, f"stimuli.{unknown[0]}" if unknown else "", "unknown field")
    _need(stimuli.get("url_mode", "public") in URL_MODES, where, "stimuli.url_mode", f"must be one of {URL_MODES}")
    values["methods"] = tuple(methods)
    study = Study(**values, qualifications=Qualifications(**qualifications), stimuli=StimulusHosting(**stimuli),
                  path=where)
    _need(study.items_per_hit <= study.items + study.catch_items, where, "items_per_hit",
          "is larger than the number of items")
    if study.stimuli.url_mode == "presigned":
        _need(isinstance(study.stimuli.presign_seconds, int) and 3600 <= study.stimuli.presign_seconds <= 604800,
              where, "stimuli.presign_seconds", "must be 3600..604800 (SigV4 presigned URLs last at most 7 days)")
        _need(study.lifetime_seconds + study.duration_seconds <= study.stimuli.presign_seconds, where,
              "lifetime_seconds", f"HITs would outlive their presigned images ({study.stimuli.presign_seconds} s): "
                                  f"shorten lifetime_seconds or use url_mode: public")
    return study
