"""The MTurk gateway over boto3's ``mturk`` client: sandbox by default, production only when asked.

* ``live=False`` (default) talks to the requester **sandbox** endpoint; ``live=True``
  needs an explicit flag *and* a positive budget cap.
* Before anything is created the cost estimate — reward x assignments x HITs plus
  MTurk's fee (20%, or 40% for HITs with 10 or more assignments, at least $0.01 per
  assignment) plus bonuses — is checked against the study's budget cap and the
  account balance.
* A study folder is launched in one mode only: sandbox answers never mix with live ones.
* One HIT type, then one HIT per ledger entry, each with a ``UniqueRequestToken``
  derived from the study id and HIT index, and the ledger is saved after every
  HIT: a launch that crashed half-way resumes without duplicates (a HIT MTurk
  already has is recovered from its error message or by listing HITs).
* Qualifications: approval rate, approved HIT count, locale, and exclusion of
  workers who took part before (a qualification type every participant gets).
* Throttling is retried by botocore's adaptive retry mode.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from amt.hit_page import html_question
from eml_core.errors import EmlError
from amt.ledger import Ledger
from amt.study import Study

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
LIVE_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
REGION = "us-east-1"

# System qualification type ids (the same in the sandbox and production).
PERCENT_APPROVED = "000000000000000000L0"
NUMBER_APPROVED = "00000000000000000040"
LOCALE = "00000000000000000071"
PARTICIPATED_QUALIFICATION_NAME = "eml-study-participant"

HIT_ID_PATTERN = re.compile(r"\b[A-Z0-9]{30}\b")


class BudgetError(EmlError):
    """Launching would cost more than the cap or the balance allows."""


class StudyModeError(EmlError):
    """A sandbox study folder asked to go live, or the reverse."""


def study_mode(ledger: Ledger, live_flag: bool) -> bool:
    """The mode to talk to MTurk in for an existing study: the one it was launched in (the flag must agree)."""
    if ledger.launched_live is None or ledger.launched_live == live_flag:
        return live_flag
    raise StudyModeError(f"{ledger.folder}: study {ledger.study_id} was launched "
                         f"{'live' if ledger.launched_live else 'in the sandbox'}; "
                         f"{'add' if ledger.launched_live else 'drop'} --live")


def mturk_client(live: bool = False):
    """A real boto3 mturk client for the sandbox (default) or production, with adaptive retries."""
    import boto3
    from botocore.config import Config

    return boto3.client("mturk", region_name=REGION, endpoint_url=LIVE_ENDPOINT if live else SANDBOX_ENDPOINT,
                        config=Config(retries={"mode": "adaptive", "max_attempts": 10}))


def fee_rate(assignments_per_hit: int) -> float:
    """MTurk's commission: 20%, or 40% for HITs with 10 or more assignments."""
    return 0.4 if assignments_per_hit >= 10 else 0.2


MIN_FEE_USD = 0.01  # MTurk's commission per assignment (and per bonus) is at least one cent


def cost_estimate(study: Study) -> dict:
    assignments = study.hits * study.assignments_per_hit
    rate = fee_rate(study.assignments_per_hit)
    rewards = assignments * study.reward_usd
    bonuses = assignments * study.bonus_usd
    fees = assignments * max(MIN_FEE_USD, rate * study.reward_usd)
    if study.bonus_usd > 0:
        fees += assignments * max(MIN_FEE_USD, rate * study.bonus_usd)
    return {"hits": study.hits, "assignments": assignments, "rewards_usd": round(rewards, 2),
            "bonuses_usd": round(bonuses, 2), "fee_rate": rate, "fees_usd": round(fees, 2),
            "total_usd": round(rewards + bonuses + fees, 2)}


class Gateway:
    def __init__(self, client, live: bool = False, log=print):
        self.client = client
        self.live = live
        self.log = log

    # --- money ---------------------------------------------------------------------------------
    def check_budget(self, study: Study) -> dict:
        estimate = cost_estimate(study)
        if self.live and study.budget_usd <= 0:
            raise BudgetError(f"study {study.study_id}: a live launch needs a positive budget_usd cap")
        if study.budget_usd > 0 and estimate["total_usd"] > study.budget_usd:
            raise BudgetError(f"study {study.study_id}: estimated cost ${estimate['total_usd']:.2f} "
                              f"(rewards ${estimate['rewards_usd']:.2f} + bonuses ${estimate['bonuses_usd']:.2f} "
                              f"+ {estimate['fee_rate']:.0%} fee) exceeds the budget cap ${study.budget_usd:.2f}")
        balance = float(self.client.get_account_balance()["AvailableBalance"])
        if estimate["total_usd"] > balance:
            raise BudgetError(f"study {study.study_id}: estimated cost ${estimate['total_usd']:.2f} exceeds the "
                              f"account balance ${balance:.2f}")
        estimate["balance_usd"] = balance
        return estimate

    # --- qualifications ------------------------------------------------------------------------
    def participation_qualification(self) -> str:
        """The id of the 'took part in an eml study' qualification type, created once per account."""
        token = None
        while True:
            kwargs = {"Query": PARTICIPATED_QUALIFICATION_NAME, "MustBeRequestable": False, "MustBeOwnedByCaller": True,
                      "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = self.client.list_qualification_types(**kwargs)
            for qualification in page.get("QualificationTypes", []):
                if qualification["Name"] == PARTICIPATED_QUALIFICATION_NAME:
                    return qualification["QualificationTypeId"]
            token = page.get("NextToken")
            if not token:
                break
        created = self.client.create_qualification_type(
            Name=PARTICIPATED_QUALIFICATION_NAME, Keywords="eml",
            Description="Granted to workers who took part in an eml explanation study (used to exclude them).",
            QualificationTypeStatus="Active")
        return created["QualificationType"]["QualificationTypeId"]

    def qualification_requirements(self, study: Study, participated_id: str | None) -> list[dict]:
        q = study.qualifications
        requirements = [
            {"QualificationTypeId": PERCENT_APPROVED, "Comparator": "GreaterThanOrEqualTo",
             "IntegerValues": [q.approval_rate], "ActionsGuarded": "DiscoverPreviewAndAccept"},
            {"QualificationTypeId": NUMBER_APPROVED, "Comparator": "GreaterThanOrEqualTo",
             "IntegerValues": [q.approved_hits], "ActionsGuarded": "DiscoverPreviewAndAccept"},
        ]
        if q.locales:
            requirements.append({"QualificationTypeId": LOCALE, "Comparator": "In",
                                 "LocaleValues": [{"Country": c} for c in q.locales],
                                 "ActionsGuarded": "DiscoverPreviewAndAccept"})
        if participated_id:
            requirements.append({"QualificationTypeId": participated_id, "Comparator": "DoesNotExist",
                                 "ActionsGuarded": "DiscoverPreviewAndAccept"})
        return requirements

    # --- launch --------------------------------------------------------------------------------
    def launch(self, ledger: Ledger, image_url) -> dict:
        """Create the HIT type and every HIT not yet in the ledger; safe to call again after a crash."""
        study = ledger.study_definition()
        if ledger.launched_live is not None and ledger.launched_live != self.live:
            raise StudyModeError(
                f"{ledger.folder}: study {ledger.study_id} was launched {'live' if ledger.launched_live else 'in the sandbox'}; "
                f"{'live' if self.live else 'sandbox'} HITs need their own folder (build it again) so that answers "
                f"of the two never mix")
        estimate = self.check_budget(study)
        launch = next((l for l in ledger.data["launches"] if l["live"] == self.live), None)
        resuming = launch is not None
        if launch is None:
            participated = self.participation_qualification() if study.qualifications.exclude_previous else None
            hit_type = self.client.create_hit_type(
                AutoApprovalDelayInSeconds=study.auto_approval_seconds,
                AssignmentDurationInSeconds=study.duration_seconds,
                Reward=f"{study.reward_usd:.2f}", Title=study.title, Keywords=study.keywords,
                Description=study.description,
                QualificationRequirements=self.qualification_requirements(study, participated))
            launch = {"live": self.live, "hit_type_id": hit_type["HITTypeId"], "participated_qualification": participated,
                      "estimate": estimate, "at": datetime.now(timezone.utc).isoformat()}
            ledger.data["launches"].append(launch)
            ledger.save()
        created = 0
        # On a resume, HITs created just before a crash may be missing from the ledger, and MTurk forgets
        # request tokens after 24 h: look them up by their build-unique annotation before creating anything.
        known = self._hits_by_annotation() if resuming and any(not h.get("hit_id") for h in ledger.hits) else {}
        for hit in ledger.hits:
            if hit.get("hit_id"):
                continue
            annotation = hit["annotation"]
            if annotation in known:
                hit.update({"hit_id": known[annotation], "hit_type_id": launch["hit_type_id"], "status": "launched",
                            "live": self.live})
                ledger.save()
                continue
            items = ledger.items_of_hit(hit["index"])
            question = html_question(study, items, image_url)
            try:
                response = self.client.create_hit_with_hit_type(
                    HITTypeId=launch["hit_type_id"], MaxAssignments=study.assignments_per_hit,
                    LifetimeInSeconds=study.lifetime_seconds, Question=question,
                    RequesterAnnotation=annotation, UniqueRequestToken=hit["unique_request_token"])
                hit_id = response["HIT"]["HITId"]
                created += 1
            except self.client.exceptions.RequestError as error:
                hit_id = self._recover_existing(error, annotation)
            hit.update({"hit_id": hit_id, "hit_type_id": launch["hit_type_id"], "status": "launched",
                        "live": self.live})
            ledger.save()  # after every HIT: a crash here loses nothing
            self.log(f"HIT {hit['index']}: {hit_id}")
        return {"created": created, "hits": len(ledger.hits), "hit_type_id": launch["hit_type_id"],
                "estimate": estimate, "live": self.live}

    def _hits_by_annotation(self) -> dict[str, str]:
        """Every HIT of the account, by RequesterAnnotation (paged)."""
        found, token = {}, None
        while True:
            page = self.client.list_hits(**({"NextToken": token} if token else {}), MaxResults=100)
            for hit in page.get("HITs", []):
                if hit.get("RequesterAnnotation"):
                    found[hit["RequesterAnnotation"]] = hit["HITId"]
            token = page.get("NextToken")
            if not token:
                return found

    def _recover_existing(self, error, annotation: str) -> str:
        """A HIT created before a crash: MTurk names it in the duplicate-token error; else find it by annotation."""
        message = str(error)
        if "already exists" not in message and "HitAlreadyExists" not in message:
            raise error
        found = HIT_ID_PATTERN.search(message)
        if found:
            return found.group(0)
        if annotation in (known := self._hits_by_annotation()):
            return known[annotation]
        raise error

    # --- after the study -----------------------------------------------------------------------
    def expire(self, ledger: Ledger) -> int:
        """Stop showing every launched HIT to workers (submitted work can still be reviewed)."""
        count = 0
        for hit in ledger.hits:
            if hit.get("hit_id") and hit.get("status") not in ("expired", "deleted"):
                self.client.update_expiration_for_hit(HITId=hit["hit_id"], ExpireAt=datetime(2015, 1, 1))
                hit["status"] = "expired"
                ledger.save()
                count += 1
        return count

    def delete(self, ledger: Ledger) -> int:
        """Delete expired HITs whose assignments are all approved or rejected."""
        count = 0
        for hit in ledger.hits:
            if hit.get("hit_id") and hit.get("status") == "expired":
                self.client.delete_hit(HITId=hit["hit_id"])
                hit["status"] = "deleted"
                ledger.save()
                count += 1
        return count
