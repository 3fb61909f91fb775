"""Test helpers for studies: a ledger made without rendering anything, and a fake MTurk that can crash.

``FakeMTurk`` models the parts of MTurk a launch touches, the way MTurk behaves:
a ``UniqueRequestToken`` is remembered (for 24 hours; ``forget_tokens()`` plays a
relaunch a day later) and a second create with it fails naming the existing HIT;
creating a HIT commits its cost against the balance and is refused when the
balance does not cover it. Its money is computed independently of ``amt.money``,
in ``Decimal`` from the ``Reward`` string the HIT type was really sent.

``crash_at=N`` makes the N-th call (1-based, any operation) fail: ``crash_mode``
"before" fails without doing anything (a request that never arrived), "after"
does the work and then fails (the answer was lost on the way back).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from types import SimpleNamespace

from amt.ledger import Ledger, study_lock, unique_request_token
from amt.study import study_from_dict

BASE_STUDY = dict(study_id="fake-study", kind="overall_map", methods=["decomposition", "gradcam"], source="run",
                  items=4, items_per_hit=2, assignments_per_hit=3, reward_usd=0.5, catch_trial_rate=0.0,
                  stimuli={"bucket": "eml-stimuli", "prefix": "studies", "url_mode": "public"})


def make_ledger(folder: Path, **fields) -> Path:
    """A study folder with a valid ledger (items, sides, HITs, tokens) and no stimulus files: for tests of
    everything after the build."""
    study = study_from_dict({**BASE_STUDY, **fields}, str(folder / "study.yaml"))
    folder.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.create(folder, study.to_dict())
    real, catch = study.items, study.catch_items
    for n in range(real + catch):
        is_catch = n >= real
        item_id = "i-" + hashlib.sha256(f"{study.study_id}:{n}".encode()).hexdigest()[:12]
        first = n % 2 == 0
        ledger.items.append({
            "item_id": item_id, "source_ref": f"pair-{n}", "is_catch": is_catch,
            "method_a": None if is_catch else study.methods[0 if first else 1],
            "method_b": None if is_catch else study.methods[1 if first else 0],
            "expected": ("A" if first else "B") if is_catch else None,
            "stimuli": {side: hashlib.sha256(f"{item_id}{side}".encode()).hexdigest()[:32] + ".png"
                        for side in "AB"},
            "hit_index": n // study.items_per_hit, "position": n % study.items_per_hit})
    for index in range(study.hits):
        ledger.hits.append({"index": index,
                            "unique_request_token": unique_request_token(study.study_id, ledger.build_id, index),
                            "annotation": f"{study.study_id}:{ledger.build_id}:{index}", "hit_id": None,
                            "status": "built",
                            "items": [i["item_id"] for i in ledger.items_of_hit(index)]})
    with study_lock(folder):
        ledger.save()
    return folder


def image_url(name: str) -> str:
    return f"https://eml-stimuli.s3.amazonaws.com/studies/fake-study/{name}"


class InjectedCrash(ConnectionError):
    """The connection to MTurk broke (injected)."""


class RequestError(Exception):
    """What botocore raises for MTurk's RequestError (the class the gateway catches)."""


def mturk_fee(amount: Decimal, assignments: int) -> Decimal:
    """MTurk's commission on one payment: 20% (40% from 10 assignments), at least one cent, to the cent
    (rounded up: the most MTurk could take)."""
    rate = Decimal("0.4") if assignments >= 10 else Decimal("0.2")
    return max(Decimal("0.01"), (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_CEILING))


class FakeMTurk:
    exceptions = SimpleNamespace(RequestError=RequestError)

    def __init__(self, balance: str = "10000.00", crash_at: int | None = None, crash_mode: str = "before",
                 bonus_usd: Decimal = Decimal(0), slow_listing: float = 0.0, signal: Path | None = None):
        self.balance = Decimal(balance)
        self.crash_at, self.crash_mode = crash_at, crash_mode
        self.bonus = bonus_usd
        self.calls = 0
        self.hit_types: dict[str, dict] = {}
        self.hits: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}
        self.qualification_types: dict[str, str] = {}
        self.refused_for_funds = 0
        self.slow_listing, self.signal = slow_listing, signal
        self.assignments: dict[str, list] = {}
        self.rejected: list[str] = []
        self.approved: list[str] = []

    # --- crash injection ---------------------------------------------------------------------------
    def _call(self, work):
        self.calls += 1
        crash = self.crash_at is not None and self.calls == self.crash_at
        if crash and self.crash_mode == "before":
            raise InjectedCrash(f"connection reset before call {self.calls}")
        result = work()
        if crash:
            raise InjectedCrash(f"connection reset after call {self.calls}")
        return result

    def forget_tokens(self) -> None:
        """24 hours later: MTurk no longer remembers request tokens."""
        self.tokens.clear()

    # --- money ---------------------------------------------------------------------------------
    def hit_cost(self, hit: dict) -> Decimal:
        reward = Decimal(self.hit_types[hit["HITTypeId"]]["Reward"])
        n = hit["MaxAssignments"]
        per_assignment = reward + mturk_fee(reward, n)
        if self.bonus > 0:
            per_assignment += self.bonus + mturk_fee(self.bonus, n)
        return n * per_assignment

    def committed(self) -> Decimal:
        return sum((self.hit_cost(h) for h in self.hits.values()), Decimal(0))

    # --- the API -------------------------------------------------------------------------------
    def get_paginator(self, operation: str):
        """What boto3's paginators do: call the list operation again with each NextToken."""
        method = getattr(self, operation)

        class Paginator:
            def paginate(self, PaginationConfig=None, **kwargs):
                token = None
                while True:
                    page = method(**kwargs, MaxResults=(PaginationConfig or {}).get("PageSize", 100),
                                  **({"NextToken": token} if token else {}))
                    yield page
                    token = page.get("NextToken")
                    if not token:
                        return

        return Paginator()

    def get_account_balance(self):
        return self._call(lambda: {"AvailableBalance": f"{self.balance:.2f}"})

    def list_qualification_types(self, **kwargs):
        return self._call(lambda: {"QualificationTypes": [{"Name": name, "QualificationTypeId": qid}
                                                          for name, qid in self.qualification_types.items()
                                                          if kwargs.get("Query", "") in name]})

    def create_qualification_type(self, Name, **kwargs):
        def work():
            qid = self.qualification_types.setdefault(Name, "Q" + secrets.token_hex(14).upper())
            return {"QualificationType": {"QualificationTypeId": qid}}
        return self._call(work)

    def create_hit_type(self, **kwargs):
        def work():
            type_id = "T" + secrets.token_hex(14).upper()
            self.hit_types[type_id] = kwargs
            return {"HITTypeId": type_id}
        return self._call(work)

    def create_hit_with_hit_type(self, HITTypeId, MaxAssignments, UniqueRequestToken, RequesterAnnotation, **kwargs):
        def work():
            if UniqueRequestToken in self.tokens:
                raise RequestError(f"AWS.MechanicalTurk.HitAlreadyExists: The HIT {self.tokens[UniqueRequestToken]} "
                                   f"already exists for this token")
            hit = {"HITId": "H" + secrets.token_hex(14).upper(), "HITTypeId": HITTypeId,
                   "MaxAssignments": MaxAssignments, "RequesterAnnotation": RequesterAnnotation}
            cost = self.hit_cost(hit)
            if cost > self.balance:
                self.refused_for_funds += 1
                raise RequestError("AWS.MechanicalTurk.InsufficientFunds")
            self.balance -= cost
            self.hits[hit["HITId"]] = hit
            self.tokens[UniqueRequestToken] = hit["HITId"]
            return {"HIT": dict(hit)}
        return self._call(work)

    def list_hits(self, MaxResults=100, NextToken=None):
        def work():
            ordered = sorted(self.hits.values(), key=lambda h: h["HITId"])
            start = int(NextToken or 0)
            page = ordered[start:start + 2]  # small pages: paging is exercised
            answer = {"HITs": [dict(h) for h in page], "NumResults": len(page)}
            if start + 2 < len(ordered):
                answer["NextToken"] = str(start + 2)
            return answer
        return self._call(work)

    # --- after the launch (collect, reject) ----------------------------------------------------
    def list_assignments_for_hit(self, HITId, **kwargs):
        if self.signal is not None and not self.signal.exists():
            self.signal.write_text("collect is reading assignments")
        time.sleep(self.slow_listing)
        return {"Assignments": self.assignments.get(HITId, []), "NumResults": len(self.assignments.get(HITId, []))}

    def associate_qualification_with_worker(self, **kwargs):
        return {}

    def approve_assignment(self, AssignmentId, **kwargs):
        self.approved.append(AssignmentId)
        return {}

    def reject_assignment(self, AssignmentId, **kwargs):
        self.rejected.append(AssignmentId)
        return {}


def answer_xml(answers: dict) -> str:
    payload = json.dumps([answers])
    return ('<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/'
            'AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"><Answer><QuestionIdentifier>'
            f'taskAnswers</QuestionIdentifier><FreeText>{payload}</FreeText></Answer></QuestionFormAnswers>')
