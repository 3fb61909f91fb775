"""The MTurk gateway over boto3's ``mturk`` client: sandbox by default, production only when asked.

* ``live=False`` (default) talks to the requester **sandbox** endpoint; ``live=True``
  needs an explicit flag *and* a positive budget cap.
* Money is integer cents computed from exactly what MTurk is sent (:mod:`amt.money`):
  the ``Reward`` string of the HIT type, ``MaxAssignments`` and the number of HITs
  in the ledger, plus MTurk's fee (20%, or 40% for HITs with 10 or more
  assignments, at least $0.01 per assignment, rounded up) and budgeted bonuses.
  Before anything is uploaded or created, the whole study must fit under the
  budget cap and the HITs still to create must fit in the account balance.
* The launch holds the study lock (:func:`amt.ledger.study_lock`) from the budget
  check to the last HIT: two launches of one folder never interleave.
* A study folder is launched in one mode only: sandbox answers never mix with live ones.
* One HIT type, then one HIT per ledger entry, each with a ``UniqueRequestToken``
  derived from the study id, the build and the HIT index, and the ledger is saved
  after every HIT: a launch that crashed half-way resumes without duplicates (a
  HIT MTurk already has is recovered from its error message or by listing HITs
  by their annotation). A folder with any launch record is never rebuilt
  (:func:`amt.build.refuse_rebuild`), so no build can mint new tokens for HITs
  MTurk already holds.
* Qualifications: approval rate, approved HIT count, locale, and exclusion of
  workers who took part before (a qualification type every participant gets).
* Throttling is retried by botocore's adaptive retry mode.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from amt.hit_page import html_question
from amt.ledger import Ledger
from amt.money import MIN_FEE_USD, cost_estimate, fee_rate, parse_usd, usd_text  # noqa: F401 (public names)
from amt.study import Study
from eml_core.errors import EmlError

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


def check_cap(study: Study, live: bool, hits: int | None = None) -> dict:
    """The cost estimate of ``hits`` HITs, refused above the study's cap (and live without a cap). No AWS call."""
    estimate = cost_estimate(study, hits)
    if live and study.budget_cents <= 0:
        raise BudgetError(f"study {study.study_id}: a live launch needs a positive budget_usd cap")
    if study.budget_cents > 0 and estimate["total_cents"] > study.budget_cents:
        raise BudgetError(f"study {study.study_id}: estimated cost ${usd_text(estimate['total_cents'])} "
                          f"(rewards ${usd_text(estimate['rewards_cents'])} + bonuses "
                          f"${usd_text(estimate['bonuses_cents'])} + {estimate['fee_rate']:.0%} fee) exceeds the "
                          f"budget cap ${usd_text(study.budget_cents)}")
    return estimate


def mturk_client(live: bool = False):
    """A real boto3 mturk client for the sandbox (default) or production, with adaptive retries."""
    import boto3
    from botocore.config import Config

    return boto3.client("mturk", region_name=REGION, endpoint_url=LIVE_ENDPOINT if live else SANDBOX_ENDPOINT,
                        config=Config(retries={"mode": "adaptive", "max_attempts": 10}))


class Gateway:
    def __init__(self, client, live: bool = False, log=print):
        self.client = client
        self.live = live
        self.log = log

    # --- money ---------------------------------------------------------------------------------
    def check_budget(self, study: Study, hits: int | None = None, remaining_hits: int | None = None) -> dict:
        """Refuse unless ``hits`` HITs (default: the study's) fit under the cap, and the ``remaining_hits``
        still to be created fit in the account balance. All in integer cents, from the amounts MTurk is sent."""
        estimate = check_cap(study, self.live, hits)
        remaining = cost_estimate(study, estimate["hits"] if remaining_hits is None else remaining_hits)
        answer = self.client.get_account_balance()["AvailableBalance"]
        try:
            balance = parse_usd(answer)
        except ValueError as error:
            raise BudgetError(f"study {study.study_id}: MTurk answered an unreadable balance ({error})") from None
        if remaining["total_cents"] > balance:
            raise BudgetError(f"study {study.study_id}: estimated cost ${usd_text(remaining['total_cents'])} exceeds "
                              f"the account balance ${usd_text(balance)}")
        estimate["balance_usd"] = balance / 100
        estimate["balance_cents"] = balance
        return estimate

    # --- qualifications ------------------------------------------------------------------------
    def participation_qualification(self) -> str:
        """The id of the 'took part in an eml study' qualification type, created once per account."""
        pages = self.client.get_paginator("list_qualification_types").paginate(
            Query=PARTICIPATED_QUALIFICATION_NAME, MustBeRequestable=False, MustBeOwnedByCaller=True,
            PaginationConfig={"PageSize": 100})
        for page in pages:
            for qualification in page.get("QualificationTypes", []):
                if qualification["Name"] == PARTICIPATED_QUALIFICATION_NAME:
                    return qualification["QualificationTypeId"]
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
    def launch(self, folder: str | Path, image_url=None, stage_stimuli=None) -> dict:
        """Create the HIT type and every HIT not yet in the ledger; safe to call again after a crash.

        Holds the study lock throughout (a second launch, a collect or a lab server waits), and in this order:
        mode check, budget check (cap and balance; no AWS call before the cap passes), then
        ``stage_stimuli(ledger)`` (uploads the stimuli and returns the ``image_url`` function; nothing is
        made public before the budget is known to fit), then the HIT type and the HITs, the ledger saved
        after each.
        """
        if (image_url is None) == (stage_stimuli is None):
            raise TypeError("launch needs exactly one of image_url and stage_stimuli")
        with Ledger.update(folder) as ledger:
            return self._launch(ledger, image_url, stage_stimuli)

    def _launch(self, ledger: Ledger, image_url, stage_stimuli) -> dict:
        study = ledger.study_definition()
        if ledger.launched_live is not None and ledger.launched_live != self.live:
            raise StudyModeError(
                f"{ledger.folder}: study {ledger.study_id} was launched "
                f"{'live' if ledger.launched_live else 'in the sandbox'}; "
                f"{'live' if self.live else 'sandbox'} HITs need their own folder (build it again) so that answers "
                f"of the two never mix")
        launch = next((record for record in ledger.data["launches"] if record["live"] == self.live), None)
        if launch is not None:
            for key, now in (("reward_cents", study.reward_cents), ("assignments_per_hit", study.assignments_per_hit)):
                if launch.get(key) is not None and launch[key] != now:
                    raise BudgetError(f"{ledger.folder}: the ledger's {key} ({now}) differs from the launched HIT "
                                      f"type's ({launch[key]}); the ledger was edited after launch")
        check_cap(study, self.live, hits=len(ledger.hits))  # before any AWS call
        if launch is not None and any(not h.get("hit_id") for h in ledger.hits):
            # A resume: HITs created just before a crash may be missing from the ledger, and MTurk forgets
            # request tokens after 24 h. Adopt them by their build-unique annotation first, so that neither
            # the balance check nor the creation below counts them again.
            known = self._hits_by_annotation()
            for hit in ledger.hits:
                if not hit.get("hit_id") and hit["annotation"] in known:
                    hit.update({"hit_id": known[hit["annotation"]], "hit_type_id": launch["hit_type_id"],
                                "status": "launched", "live": self.live})
                    ledger.save()
        missing = [h for h in ledger.hits if not h.get("hit_id")]
        estimate = self.check_budget(study, hits=len(ledger.hits), remaining_hits=len(missing))
        if stage_stimuli is not None:
            image_url = stage_stimuli(ledger)
        if launch is None:
            participated = self.participation_qualification() if study.qualifications.exclude_previous else None
            hit_type = self.client.create_hit_type(
                AutoApprovalDelayInSeconds=study.auto_approval_seconds,
                AssignmentDurationInSeconds=study.duration_seconds,
                Reward=usd_text(study.reward_cents), Title=study.title, Keywords=study.keywords,
                Description=study.description,
                QualificationRequirements=self.qualification_requirements(study, participated))
            launch = {"live": self.live, "hit_type_id": hit_type["HITTypeId"],
                      "participated_qualification": participated,
                      "reward_cents": study.reward_cents, "assignments_per_hit": study.assignments_per_hit,
                      "estimate": estimate, "at": datetime.now(timezone.utc).isoformat()}
            ledger.data["launches"].append(launch)
            ledger.save()
        created = 0
        for hit in ledger.hits:
            if hit.get("hit_id"):
                continue
            annotation = hit["annotation"]
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
        found = {}
        for page in self.client.get_paginator("list_hits").paginate(PaginationConfig={"PageSize": 100}):
            for hit in page.get("HITs", []):
                if hit.get("RequesterAnnotation"):
                    found[hit["RequesterAnnotation"]] = hit["HITId"]
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
    def expire(self, folder: str | Path) -> int:
        """Stop showing every launched HIT to workers (submitted work can still be reviewed)."""
        count = 0
        with Ledger.update(folder) as ledger:
            for hit in ledger.hits:
                if hit.get("hit_id") and hit.get("status") not in ("expired", "deleted"):
                    self.client.update_expiration_for_hit(HITId=hit["hit_id"], ExpireAt=datetime(2015, 1, 1))
                    hit["status"] = "expired"
                    ledger.save()
                    count += 1
        return count

    def delete(self, folder: str | Path) -> int:
        """Delete expired HITs whose assignments are all approved or rejected."""
        count = 0
        with Ledger.update(folder) as ledger:
            for hit in ledger.hits:
                if hit.get("hit_id") and hit.get("status") == "expired":
                    self.client.delete_hit(HITId=hit["hit_id"])
                    hit["status"] = "deleted"
                    ledger.save()
                    count += 1
        return count
