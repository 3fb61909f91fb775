"""Money: every spend check uses exactly what MTurk is sent, and no crash, relaunch or rebuild ever commits more
than the cap or creates a HIT twice (property-tested against a fake MTurk that crashes at the N-th call)."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from amt.build import refuse_rebuild
from amt.gateway import BudgetError, Gateway
from amt.ledger import Ledger
from amt.money import cost_estimate, fee_cents, usd_text, whole_cents
from amt.study import StudyError, study_from_dict
from tests.amt.helpers import BASE_STUDY, FakeMTurk, InjectedCrash, image_url, make_ledger, mturk_fee

cents = st.integers(min_value=1, max_value=10_000)


def _study(**fields):
    return study_from_dict({**BASE_STUDY, **fields}, "money.yaml")


def _independent_total(reward: Decimal, bonus: Decimal, assignments_per_hit: int, hits: int) -> Decimal:
    per_assignment = reward + mturk_fee(reward, assignments_per_hit)
    if bonus > 0:
        per_assignment += bonus + mturk_fee(bonus, assignments_per_hit)
    return hits * assignments_per_hit * per_assignment


@settings(max_examples=300, deadline=None)
@given(reward=cents, bonus=st.integers(0, 10_000), per_hit=st.integers(1, 40), items=st.integers(1, 400),
       items_per_hit=st.integers(1, 50))
def test_estimate_is_mturks_price_in_cents(reward, bonus, per_hit, items, items_per_hit):
    assume(items_per_hit <= items)
    study = _study(reward_usd=reward / 100, bonus_usd=bonus / 100, assignments_per_hit=per_hit, items=items,
                   items_per_hit=items_per_hit)
    assert (study.reward_cents, study.bonus_cents) == (reward, bonus)
    estimate = cost_estimate(study)
    expected = _independent_total(Decimal(reward) / 100, Decimal(bonus) / 100, per_hit, study.hits)
    assert Decimal(estimate["total_cents"]) / 100 == expected
    assert estimate["total_cents"] == estimate["rewards_cents"] + estimate["bonuses_cents"] + estimate["fees_cents"]
    assert fee_cents(reward, per_hit) >= 1


@settings(max_examples=300, deadline=None)
@given(amount=st.one_of(st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
                        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100), places=3).map(float)),
       field=st.sampled_from(["reward_usd", "bonus_usd", "budget_usd"]))
def test_money_that_is_not_whole_cents_is_refused_naming_the_field(amount, field):
    whole = Decimal(repr(amount)) * 100 == (Decimal(repr(amount)) * 100).to_integral_value()
    if whole:
        study = _study(**{field: amount})
        assert Decimal(getattr(study, field.replace("_usd", "_cents"))) == Decimal(repr(amount)) * 100
    else:
        with pytest.raises(StudyError, match=rf"money.yaml: field '{field}': must be a whole number of cents"):
            _study(**{field: amount})


def test_the_red_teams_amounts():
    # 0.115 was sent to MTurk as "0.12" while the check used 0.115: now refused, naming the field
    cents = r"field .reward_usd.: must be a whole number of cents \(MTurk pays in cents.*\), got 0.115"
    with pytest.raises(StudyError, match=cents):
        _study(reward_usd=0.115)
    study = _study(reward_usd=0.29, items=6, items_per_hit=2, assignments_per_hit=9)
    assert study.reward_cents == 29 and usd_text(study.reward_cents) == "0.29"  # not 28.999...
    assert whole_cents(0.1 + 0.2) is None  # 0.30000000000000004 is not an amount anyone typed


def _launch_until_done(folder: Path, fake: FakeMTurk, attempts: int = 30) -> tuple[int, bool]:
    """Launch, and relaunch after every injected crash; returns (crashes, refused by the budget)."""
    crashes = 0
    for _ in range(attempts):
        try:
            Gateway(fake, log=lambda *_: None).launch(folder, image_url)
            return crashes, False
        except InjectedCrash:
            crashes += 1
            fake.crash_at = None if crashes >= 3 else fake.calls + 1 + crashes  # a few more crashes, then none
            if fake.hits or Ledger.load(folder).data["launches"]:
                with pytest.raises(StudyError, match="refusing to rebuild"):  # a rebuild would re-buy every HIT
                    refuse_rebuild(folder)
        except BudgetError:
            return crashes, True
    raise AssertionError("the launch never finished")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reward=st.integers(1, 300), bonus=st.integers(0, 100), per_hit=st.integers(1, 12), items=st.integers(2, 14),
       items_per_hit=st.integers(1, 5), cap_slack=st.one_of(st.none(), st.integers(-300, 300)),
       balance_slack=st.integers(-300, 3000),
       crash_at=st.integers(1, 14), crash_mode=st.sampled_from(["before", "after"]), forget=st.booleans(),
       exclude_previous=st.booleans())
def test_no_crash_point_ever_overspends_or_duplicates_a_hit(reward, bonus, per_hit, items, items_per_hit, cap_slack,
                                                            balance_slack, crash_at, crash_mode, forget,
                                                            exclude_previous):
    """Cap and balance are drawn around the study's exact price (cents either side), or no cap (sandbox)."""
    assume(items_per_hit <= items)
    hits = -(-items // items_per_hit)
    price = int(_independent_total(Decimal(reward), Decimal(bonus), per_hit, hits))  # in cents
    cap = 0 if cap_slack is None else max(1, price + cap_slack)
    balance = max(0, price + balance_slack)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_ledger(Path(tmp) / "study", reward_usd=reward / 100, bonus_usd=bonus / 100,
                             assignments_per_hit=per_hit, items=items, items_per_hit=items_per_hit,
                             budget_usd=cap / 100, qualifications={"exclude_previous": exclude_previous})
        fake = FakeMTurk(balance=f"{balance / 100:.2f}", crash_at=crash_at, crash_mode=crash_mode,
                         bonus_usd=Decimal(bonus) / 100)
        original = fake.create_hit_with_hit_type
        if forget:  # the relaunch comes a day later: MTurk has forgotten the request tokens
            def create(**kwargs):
                fake.forget_tokens()
                return original(**kwargs)
            fake.create_hit_with_hit_type = create
        crashes, refused = _launch_until_done(folder, fake)
        event(f"crashes: {crashes}, refused by the budget: {refused}")
        ledger = Ledger.load(folder)
        annotations = [h["RequesterAnnotation"] for h in fake.hits.values()]
        assert len(annotations) == len(set(annotations)), "a HIT was created twice"
        assert fake.refused_for_funds == 0, "a HIT was attempted that the balance could not cover"
        if cap > 0:
            assert fake.committed() <= Decimal(cap) / 100, f"committed ${fake.committed()} over the ${cap / 100} cap"
        assert all(t["Reward"] == usd_text(reward) for t in fake.hit_types.values())
        if refused:  # only ever before the first HIT, and only when the study really does not fit
            assert not fake.hits
            total = _independent_total(Decimal(reward) / 100, Decimal(bonus) / 100, per_hit, len(ledger.hits))
            assert (cap and total > Decimal(cap) / 100) or total > Decimal(balance) / 100
        else:
            assert sorted(h["hit_id"] for h in ledger.hits) == sorted(fake.hits), "an orphaned or unknown HIT"
            assert {h["annotation"] for h in ledger.hits} == set(annotations)
            assert all(fake.hits[h["hit_id"]]["MaxAssignments"] == per_hit for h in ledger.hits)


def test_the_red_teams_orphaned_hit_scenario(tmp_path):
    """A launch crashed after MTurk created a HIT (the answer was lost); a rebuild used to be allowed and the
    relaunch created every HIT again. Now the rebuild is refused and the relaunch adopts the HIT."""
    folder = make_ledger(tmp_path / "study", items=10, items_per_hit=2, assignments_per_hit=6, reward_usd=0.45,
                         budget_usd=16.20)  # 5 HITs x 6 x ($0.45 + $0.09) = $16.20: exactly the cap
    fake = FakeMTurk(crash_at=5, crash_mode="after")  # balance, qualification list+create, HIT type, 1st HIT
    with pytest.raises(InjectedCrash):
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
    assert len(fake.hits) == 1 and not any(h["hit_id"] for h in Ledger.load(folder).hits)
    with pytest.raises(StudyError, match=r"holds 1 launch record\(s\); refusing to rebuild it: build into a new"):
        refuse_rebuild(folder)
    fake.forget_tokens()  # even a day later
    Gateway(fake, log=lambda *_: None).launch(folder, image_url)
    assert len(fake.hits) == 5 and fake.committed() == Decimal("16.20")
    assert sorted(h["hit_id"] for h in Ledger.load(folder).hits) == sorted(fake.hits)


def test_a_cap_one_cent_short_refuses_before_any_call(tmp_path):
    folder = make_ledger(tmp_path / "study", items=10, items_per_hit=2, assignments_per_hit=6, reward_usd=0.45,
                         budget_usd=16.19)
    fake = FakeMTurk()
    with pytest.raises(BudgetError, match=r"estimated cost \$16.20 .* exceeds the budget cap \$16.19"):
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
    assert fake.calls == 0


def test_nothing_is_uploaded_when_the_budget_refuses(tmp_path, s3_endpoint):
    import boto3

    from amt.hosting import stage_stimuli

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="eml-budget-refusal")  # a bucket of its own: the S3 server is shared by the session
    hosting = {"bucket": "eml-budget-refusal", "prefix": "studies", "url_mode": "public"}
    folder = make_ledger(tmp_path / "study", budget_usd=0.5, stimuli=hosting)  # 2 HITs x 3 x $0.60 = $3.60
    with pytest.raises(BudgetError, match="exceeds the budget cap"):
        Gateway(FakeMTurk(), log=lambda *_: None).launch(folder, stage_stimuli=stage_stimuli(s3))
    assert s3.list_objects_v2(Bucket="eml-budget-refusal").get("KeyCount", 0) == 0
    folder = make_ledger(tmp_path / "poor", budget_usd=10.0, stimuli=hosting)
    with pytest.raises(BudgetError, match="exceeds the account balance"):
        Gateway(FakeMTurk(balance="1.00"), log=lambda *_: None).launch(folder, stage_stimuli=stage_stimuli(s3))
    assert s3.list_objects_v2(Bucket="eml-budget-refusal").get("KeyCount", 0) == 0
    assert "stimulus_urls" not in Ledger.load(folder).data


def test_a_ledger_edited_after_launch_cannot_change_the_reward(tmp_path):
    folder = make_ledger(tmp_path / "study", budget_usd=10.0)
    fake = FakeMTurk(crash_at=6, crash_mode="before")  # after the HIT type and the first HIT
    with pytest.raises(InjectedCrash):
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
    with Ledger.update(folder) as ledger:
        ledger.data["study"]["reward_usd"] = 0.01  # would make the cap check pass for a costlier HIT type
    with pytest.raises(BudgetError, match="reward_cents .* differs from the launched HIT type"):
        Gateway(fake, log=lambda *_: None).launch(folder, image_url)
