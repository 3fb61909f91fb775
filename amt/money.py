"""Money for MTurk, in integer cents: what a study commits is computed from exactly what MTurk is sent.

MTurk pays in whole cents, and its API takes amounts as decimal strings ("0.50").
A study definition therefore states ``reward_usd``, ``bonus_usd`` and
``budget_usd`` as whole numbers of cents (``0.115`` is refused, naming the
field: nothing is rounded behind the user's back), and everything after
validation is integer arithmetic on cents:

* the ``Reward`` sent to ``CreateHITType`` is :func:`usd_text` of ``reward_cents``;
* the commission per assignment is ``max(1, ceil(rate x amount))`` cents with
  ``rate`` = 20%, or 40% for HITs with 10 or more assignments (MTurk's fee,
  at least $0.01 per assignment); rounding *up* makes the estimate an upper
  bound of what MTurk charges, whichever way it rounds. Budgeted bonuses are
  charged at the same rate (for bonuses MTurk takes 20% whatever the HIT
  size, so this again errs high);
* committed cost of a study = HITs x ``MaxAssignments`` x (reward + its fee
  + bonus + its fee), compared with the cap and the account balance in cents.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MIN_FEE_CENTS = 1  # MTurk's commission per assignment (and per bonus) is at least one cent
MIN_FEE_USD = MIN_FEE_CENTS / 100


def whole_cents(value: float | int) -> int | None:
    """``value`` dollars as integer cents, or None when it is not a whole number of cents.

    Floats are read through their shortest repr (``0.29`` is 29 cents, not 28.999...).
    """
    try:
        amount = Decimal(repr(value)) * 100
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.to_integral_value():
        return None
    return int(amount)


def usd_text(cents: int) -> str:
    """The decimal string MTurk's API takes: 50 -> ``"0.50"``."""
    if cents < 0:
        raise ValueError(f"negative amount {cents} cents")
    return f"{cents // 100}.{cents % 100:02d}"


def parse_usd(text) -> int:
    """Cents in a dollar amount MTurk returned (``AvailableBalance``), rounded down; ValueError if unreadable."""
    try:
        amount = Decimal(str(text))
    except InvalidOperation:
        raise ValueError(f"not a dollar amount: {str(text)[:40]!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a dollar amount: {str(text)[:40]!r}")
    return int((amount * 100).to_integral_value(rounding="ROUND_FLOOR"))


def fee_percent(assignments_per_hit: int) -> int:
    """MTurk's commission in percent: 20, or 40 for HITs with 10 or more assignments."""
    return 40 if assignments_per_hit >= 10 else 20


def fee_rate(assignments_per_hit: int) -> float:
    return fee_percent(assignments_per_hit) / 100


def fee_cents(amount_cents: int, assignments_per_hit: int) -> int:
    """The commission on one payment of ``amount_cents``: ceil(rate x amount), at least one cent."""
    return max(MIN_FEE_CENTS, -(-amount_cents * fee_percent(assignments_per_hit) // 100))


def assignment_cents(reward_cents: int, bonus_cents: int, assignments_per_hit: int) -> int:
    """Everything one assignment can cost: reward, budgeted bonus, and the commission on each."""
    total = reward_cents + fee_cents(reward_cents, assignments_per_hit)
    if bonus_cents > 0:
        total += bonus_cents + fee_cents(bonus_cents, assignments_per_hit)
    return total


def cost_estimate(study, hits: int | None = None) -> dict:
    """The cost of ``hits`` HITs of ``study`` (default: the study's own HIT count), in cents and dollars."""
    hits = study.hits if hits is None else hits
    per_hit = study.assignments_per_hit
    assignments = hits * per_hit
    reward, bonus = study.reward_cents, study.bonus_cents
    rewards, bonuses = assignments * reward, assignments * bonus
    fees = assignments * (assignment_cents(reward, bonus, per_hit) - reward - bonus)
    total = rewards + bonuses + fees
    return {"hits": hits, "assignments": assignments, "reward_cents": reward, "bonus_cents": bonus,
            "fee_rate": fee_rate(per_hit), "rewards_cents": rewards, "bonuses_cents": bonuses, "fees_cents": fees,
            "total_cents": total, "rewards_usd": rewards / 100, "bonuses_usd": bonuses / 100, "fees_usd": fees / 100,
            "total_usd": total / 100}
