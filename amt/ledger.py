"""The study ledger: everything a study built, launched and collected, in one JSON file, and its lock.

The ledger is the study's memory across crashes: items with which method is
"A", stimuli, HITs with their ``UniqueRequestToken`` and MTurk ids, launches,
assignments held or rejected, lab participants' tokens. It also holds the
per-study salt that hashes worker ids; the salt never leaves the ledger
(responses carry only the hash). Its schema is :class:`LedgerRecord`: every load
validates the file, so a corrupt or hand-edited ledger is refused with one line
naming the field, never half-used.

**One lock, one way to write.** Several processes touch a study folder: a
launch, a scheduled collection, a ``reject`` typed meanwhile, a lab server
adding participants and storing answers. Each write is a read-modify-write
under :func:`study_lock` (an ``fcntl.flock`` on ``.study.lock`` in the folder,
exclusive across processes and threads)::

    with Ledger.update(folder) as ledger:   # re-reads the file under the lock
        ledger.data["rejected"][...] = ...
    # saved on leaving the block (atomic temp file + rename), then unlocked

:meth:`Ledger.save` refuses to run without the lock, so no writer can skip it.
The same lock guards the study's tables (``responses.parquet``,
``errors.parquet``). It is re-entrant within a thread, and a nested
``Ledger.update`` of the same folder yields the ledger already open, so an
inner step never reads a stale copy from disk or overwrites the outer one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from amt.study import (
    FieldProblem,
    Study,
    StudyError,
    describe_error,
    first_error,
    known_study_fields,
    one_line,
    read_bounded_text,
)
from eml_core.atomic import write_bytes_atomic

LEDGER_FILE = "ledger.json"
LOCK_FILE = ".study.lock"
MAX_LEDGER_BYTES = 256 << 20

Salt = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]
BuildId = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{12}$")]
RequestToken = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{40}$")]
WorkerHash = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")]
ItemId = Annotated[StrictStr, Field(pattern=r"^i-[0-9a-f]{12}$")]
StimulusName = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}\.png$")]
MTurkId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]  # HIT, HIT type, assignment, qualification
LabToken = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
Text = Annotated[StrictStr, Field(max_length=4096)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Sides(_Record):
    A: StimulusName
    B: StimulusName


class LedgerItem(_Record):
    item_id: ItemId
    source_ref: Text
    is_catch: StrictBool
    method_a: StrictStr | None        # which method robot A shows (None for catch trials)
    method_b: StrictStr | None
    expected: Literal["A", "B"] | None  # catch trials: the robot that should be preferred
    stimuli: Sides
    hit_index: Annotated[StrictInt, Field(ge=0)]
    position: Annotated[StrictInt, Field(ge=0)]


class LedgerHit(_Record):
    index: Annotated[StrictInt, Field(ge=0)]
    unique_request_token: RequestToken
    annotation: Text
    hit_id: MTurkId | None
    status: Literal["built", "launched", "expired", "deleted"]
    items: list[ItemId]
    hit_type_id: MTurkId | None = None
    live: StrictBool | None = None


class Launch(_Record):
    live: StrictBool
    hit_type_id: MTurkId
    participated_qualification: MTurkId | None
    reward_cents: Annotated[StrictInt, Field(ge=1)] | None = None      # what CreateHITType was sent
    assignments_per_hit: Annotated[StrictInt, Field(ge=1)] | None = None
    estimate: dict[StrictStr, StrictInt | StrictFloat | StrictBool] | None = None
    at: Text | None = None


class Review(_Record):
    hit_id: MTurkId
    reason: Text


class LedgerRecord(_Record):
    """The schema of ``ledger.json``."""

    study: Study
    salt: Salt
    build_id: BuildId
    items: list[LedgerItem]
    hits: list[LedgerHit]
    launches: list[Launch]
    stimulus_urls: dict[StimulusName, Annotated[StrictStr, Field(pattern=r"^https?://", max_length=8192)]] = {}
    review: dict[MTurkId, Review] = {}          # assignments held: failed a catch trial or malformed
    rejected: dict[MTurkId, Text] = {}          # assignment -> the reason the worker was shown
    qualified_workers: list[WorkerHash] = []       # salted worker hashes given the participation qualification
    lab_tokens: list[LabToken] = []             # secret links of lab participants

    def check_consistency(self) -> None:
        """Cross-record checks: HITs, items and the study agree (FieldProblem naming the first that does not)."""
        study = self.study
        if len(self.hits) != study.hits:
            raise FieldProblem("hits", f"{len(self.hits)} HITs, the study makes {study.hits}")
        if len(self.items) != study.items + study.catch_items:
            raise FieldProblem("items", f"{len(self.items)} items, the study makes {study.items + study.catch_items}")
        ids = [item.item_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise FieldProblem("items", "an item_id appears twice")
        by_hit: dict[int, list[LedgerItem]] = {}
        for n, item in enumerate(self.items):
            if item.hit_index >= len(self.hits):
                raise FieldProblem(f"items.{n}.hit_index", f"no HIT {item.hit_index}")
            if item.is_catch:
                if item.method_a is not None or item.method_b is not None or item.expected is None:
                    raise FieldProblem(f"items.{n}", "a catch trial has an expected side and no methods")
            elif {item.method_a, item.method_b} != set(study.methods) or item.expected is not None:
                raise FieldProblem(f"items.{n}", f"methods must be the study's {list(study.methods)}, one per side")
            by_hit.setdefault(item.hit_index, []).append(item)
        for n, hit in enumerate(self.hits):
            if hit.index != n:
                raise FieldProblem(f"hits.{n}.index", f"is {hit.index}, expected {n}")
            items = sorted(by_hit.get(n, []), key=lambda i: i.position)
            if [i.position for i in items] != list(range(len(items))) or not items:
                raise FieldProblem(f"hits.{n}", "item positions must be 0, 1, 2... without gaps")
            if hit.items != [i.item_id for i in items]:
                raise FieldProblem(f"hits.{n}.items", "do not match the items of this HIT")
            if hit.annotation != f"{study.study_id}:{self.build_id}:{n}" or \
                    hit.unique_request_token != unique_request_token(study.study_id, self.build_id, n):
                raise FieldProblem(f"hits.{n}", "annotation or request token does not belong to this build")
        if len({launch.live for launch in self.launches}) > 1:
            raise FieldProblem("launches", "a study folder is launched in one mode only (sandbox or live)")


_held = threading.local()  # per thread: {lock file: [depth, open Ledger or None]}


def _holdings() -> dict:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


def _lock_key(folder: Path) -> str:
    return os.path.realpath(folder / LOCK_FILE)


def holds_lock(folder: str | Path) -> bool:
    return _lock_key(Path(folder)) in _holdings()


@contextlib.contextmanager
def study_lock(folder: str | Path):
    """Exclusive lock on a study folder (across processes and threads; re-entrant within a thread)."""
    folder = Path(folder)
    key = _lock_key(folder)
    holdings = _holdings()
    if key in holdings:
        holdings[key][0] += 1
        try:
            yield
        finally:
            holdings[key][0] -= 1
        return
    if not folder.is_dir():
        raise StudyError(f"{folder}: no such study folder")
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        reason = "is a link (refused)" if error.errno == errno.ELOOP else f"cannot be opened ({error.strerror})"
        raise StudyError(f"{folder / LOCK_FILE}: {reason}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        holdings[key] = [1, None]
        try:
            yield
        finally:
            del holdings[key]
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _validated(data, where: str) -> LedgerRecord:
    if not isinstance(data, dict):
        raise StudyError(f"{where}: field '(top level)': expected a JSON object, got {type(data).__name__}")
    try:
        record = LedgerRecord.model_validate(data)
    except ValidationError as error:
        raise StudyError(one_line(f"{where}: corrupt ledger: "
                                  f"{describe_error(first_error(error), known_study_fields(('study',)))}")) from None
    except FieldProblem as problem:  # the study's own cross-field checks
        raise StudyError(one_line(f"{where}: corrupt ledger: field 'study.{problem.field}': "
                                  f"{problem.problem}")) from None
    try:
        record.check_consistency()
    except FieldProblem as problem:
        raise StudyError(one_line(f"{where}: corrupt ledger: field {problem.field!r}: {problem.problem}")) from None
    return record


class Ledger:
    def __init__(self, folder: str | Path, data: dict):
        self.folder = Path(folder)
        self.data = data

    @classmethod
    def create(cls, folder: str | Path, study: dict) -> "Ledger":
        return cls(folder, {"study": study, "salt": secrets.token_hex(16), "build_id": secrets.token_hex(6),
                            "items": [], "hits": [], "launches": []})

    @classmethod
    def load(cls, folder: str | Path) -> "Ledger":
        """Read and validate ``ledger.json`` (a snapshot: to change it, use :meth:`update`)."""
        path = Path(folder) / LEDGER_FILE
        if Path(folder).exists() and not Path(folder).is_dir():
            raise StudyError(f"{folder}: is a file, not a study folder")
        if not path.is_file():
            raise StudyError(f"{path}: no study ledger here; run `eml study build` first")
        text = read_bounded_text(path, MAX_LEDGER_BYTES, "study ledger")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise StudyError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
        except RecursionError:
            raise StudyError(f"{path}: nested too deeply to be a study ledger") from None
        _validated(data, str(path))
        return cls(folder, data)

    @classmethod
    @contextlib.contextmanager
    def update(cls, folder: str | Path):
        """Read-modify-write under the study lock: yields the freshly read ledger, saves it on a clean exit.

        Nested in a block that already has this folder's ledger open (same thread), yields that same object.
        """
        folder = Path(folder)
        if not (folder / LEDGER_FILE).is_file():
            cls.load(folder)  # raises the right one-line error, without creating anything
        with study_lock(folder):
            holding = _holdings()[_lock_key(folder)]
            if holding[1] is not None:
                yield holding[1]
                return
            ledger = cls.load(folder)
            holding[1] = ledger
            try:
                yield ledger
                ledger.save()
            finally:
                holding[1] = None

    def save(self) -> Path:
        """Validate and write atomically; only under :func:`study_lock` (use :meth:`update`)."""
        if not holds_lock(self.folder):
            raise RuntimeError(f"{self.folder / LEDGER_FILE}: saved without the study lock; use Ledger.update()")
        _validated(self.data, str(self.folder / LEDGER_FILE))
        return write_bytes_atomic(self.folder / LEDGER_FILE, json.dumps(self.data, indent=2, sort_keys=True).encode())

    # convenience views
    def study_definition(self) -> Study:
        """The validated :class:`amt.study.Study` this ledger was built from."""
        from amt.study import study_from_dict

        return study_from_dict(self.data["study"], str(self.folder / LEDGER_FILE))

    @property
    def study_id(self) -> str:
        return self.data["study"]["study_id"]

    @property
    def build_id(self) -> str:
        """Random per build: part of every HIT's request token and annotation."""
        return self.data["build_id"]

    @property
    def launched_live(self) -> bool | None:
        """None before any launch; else whether this study went to production (one mode per study folder)."""
        launches = self.data.get("launches", [])
        return launches[0]["live"] if launches else None

    @property
    def salt(self) -> str:
        return self.data["salt"]

    @property
    def items(self) -> list[dict]:
        return self.data["items"]

    @property
    def hits(self) -> list[dict]:
        return self.data["hits"]

    def items_of_hit(self, index: int) -> list[dict]:
        return sorted((i for i in self.items if i["hit_index"] == index), key=lambda i: i["position"])

    def hit_by_id(self, hit_id: str) -> dict | None:
        return next((h for h in self.hits if h.get("hit_id") == hit_id), None)

    def has_activity(self) -> list[str]:
        """What makes this study folder more than a build: launches, HITs, participants, answers."""
        found = []
        if self.data.get("launches"):
            found.append(f"{len(self.data['launches'])} launch record(s)")
        if any(h.get("hit_id") for h in self.hits):
            found.append("MTurk HIT ids")
        if self.data.get("lab_tokens"):
            found.append(f"{len(self.data['lab_tokens'])} lab participant token(s)")
        for key, what in (("stimulus_urls", "uploaded stimuli"), ("review", "assignments held for review"),
                          ("rejected", "rejected assignments"), ("qualified_workers", "qualified workers")):
            if self.data.get(key):
                found.append(what)
        return found


def unique_request_token(study_id: str, build_id: str, index: int) -> str:
    """Stable per (build, HIT): a relaunch after a crash re-sends the same token (MTurk dedupes for 24 h),
    while a rebuild of the same study gets new tokens and can never adopt the old build's HITs."""
    return hashlib.sha256(f"eml:{study_id}:{build_id}:{index}".encode()).hexdigest()[:40]
