"""The study ledger: everything a study built, launched and collected, in one JSON file.

The ledger is the study's memory across crashes: items with which method is
"A", stimuli, HITs with their ``UniqueRequestToken`` and MTurk ids. It also holds
the per-study salt that hashes worker ids; the salt never leaves the ledger
(responses carry only the hash). Writes are atomic (temp file + rename), and
the gateway writes after every HIT it creates.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from eml_core.atomic import write_bytes_atomic

LEDGER_FILE = "ledger.json"


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
        path = Path(folder) / LEDGER_FILE
        if not path.is_file():
            from amt.study import StudyError

            raise StudyError(f"{path}: no study ledger here; run `eml study build` first")
        return cls(folder, json.loads(path.read_text()))

    def save(self) -> Path:
        return write_bytes_atomic(self.folder / LEDGER_FILE, json.dumps(self.data, indent=2, sort_keys=True).encode())

    # convenience views
    def study_definition(self):
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
