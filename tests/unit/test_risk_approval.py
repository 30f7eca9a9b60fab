"""Risk approval: sizing maths, every rejection reason, the daily loss trip, and the limits as properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from pydantic import ValidationError

from catalyst.domain.errors import InvalidQuantity
from catalyst.domain.positions import PositionSide
from catalyst.domain.risk import (
    APPROVED, Account, Book, Candidate, Holding, RejectionReason, RiskSettings,
    approve, daily_loss_breached, default_stop, risk_budget, size_position,
)  # fmt: skip

D = Decimal
# Caps high enough that only the risk budget sizes a trade, unless a test lowers one.
ROOMY = RiskSettings(max_position_notional=D("1000000"), max_total_notional=D("1000000"))
RICH = Account(equity=D("100000"), buying_power=D("400000"))


def decide_one(candidate: Candidate, book: Book = Book(), account: Account = RICH, settings: RiskSettings = ROOMY):
    (decision,) = approve([candidate], book, account, settings)
    return decision


# --- sizing -------------------------------------------------------------------------------------------------

def test_half_percent_of_100k_equity_is_500_of_risk() -> None:
    assert risk_budget(D("100000"), RiskSettings()) == D("500")


def test_entry_50_stop_48_buys_250_shares() -> None:
    assert size_position(D("100000"), D("50"), D("48"), ROOMY) == D("250")


def test_size_rounds_down_to_whole_shares() -> None:
    # $500 / $3 = 166.67 shares: 167 would risk $501.
    assert size_position(D("100000"), D("50"), D("47"), ROOMY) == D("166")


def test_a_size_is_written_as_plain_whole_shares_never_with_an_exponent() -> None:
    # $500 of risk at $0.08 a share is 6,250 shares; the quotient is Decimal('6.25E+3'), which logs as "6.25E+3".
    shares = size_position(D("100000"), D("2.48"), D("2.40"), ROOMY)
    assert shares == D("6250") and str(shares) == "6250"


def test_size_is_capped_by_max_position_notional() -> None:
    capped = RiskSettings(max_position_notional=D("10000"), max_total_notional=D("1000000"))
    # Risk allows 250 shares ($12,500); the $10,000 cap allows 200.
    assert size_position(D("100000"), D("50"), D("48"), capped) == D("200")


def test_size_is_capped_by_buying_power_as_the_broker_counts_a_market_buy() -> None:
    # Alpaca values an opening market buy up to 4 % above the last price: 5,000 / (50 × 1.04) = 96.15 shares. Sized at
    # the last price (100 shares), the entry was refused for buying power (a review).
    assert size_position(D("100000"), D("50"), D("48"), ROOMY, buying_power=D("5000")) == D("96")


def test_short_size_uses_the_stop_above_the_entry() -> None:
    assert size_position(D("100000"), D("50"), D("52"), ROOMY) == D("250")


def test_stop_equal_to_entry_sizes_nothing() -> None:
    assert size_position(D("100000"), D("50"), D("50"), ROOMY) == D("0")


def test_float_prices_are_refused_with_a_named_error() -> None:
    with pytest.raises(InvalidQuantity, match="entry"):
        size_position(D("100000"), 50.0, D("48"), ROOMY)  # type: ignore[arg-type]


# --- approval -----------------------------------------------------------------------------------------------

def test_approved_decision_carries_qty_stop_target_and_r() -> None:
    decision = decide_one(Candidate("AAPL", D("50"), D("48"), scan_id=7))

    assert decision.approved and decision.reason == APPROVED
    assert (decision.qty, decision.entry, decision.stop, decision.target) == (D("250"), D("50"), D("48"), D("54"))
    assert decision.risk_per_share == D("2")
    assert decision.candidate.scan_id == 7 and not decision.emergency_stop


def test_candidate_without_pattern_stop_uses_the_default_stop_pct() -> None:
    decision = decide_one(Candidate("AAPL", D("100")))  # default 2 % → stop 98, R = 2, target 104

    assert decision.approved
    assert (decision.stop, decision.target, decision.qty) == (D("98"), D("104"), D("250"))


def test_short_is_rejected_unless_allowed() -> None:
    short = Candidate("TSLA", D("50"), D("52"), side=PositionSide.SHORT)

    assert decide_one(short).reason == RejectionReason.SHORT_NOT_ALLOWED
    allowed = decide_one(short, settings=ROOMY.model_copy(update={"allow_short": True}))
    assert allowed.approved and allowed.target == D("46") and allowed.qty == D("250")


def test_symbol_already_in_the_book_is_rejected() -> None:
    book = Book((Holding("AAPL", D("5000")),))

    assert decide_one(Candidate("AAPL", D("50"), D("48")), book).reason == RejectionReason.ALREADY_HELD


def test_second_candidate_for_the_same_symbol_is_rejected() -> None:
    first, second = approve([Candidate("AAPL", D("50"), D("48")), Candidate("AAPL", D("51"), D("49"))],
                            Book(), RICH, ROOMY)

    assert first.approved
    assert second.reason == RejectionReason.ALREADY_HELD


def test_max_open_positions_counts_the_book_and_earlier_approvals() -> None:
    settings = ROOMY.model_copy(update={"max_open_positions": 2})
    book = Book((Holding("MSFT", D("1000")),))

    first, second = approve([Candidate("AAPL", D("50"), D("48")), Candidate("TSLA", D("50"), D("48"))],
                            book, RICH, settings)

    assert first.approved
    assert second.reason == RejectionReason.MAX_OPEN_POSITIONS


def test_stop_above_a_long_entry_is_rejected() -> None:
    decision = decide_one(Candidate("AAPL", D("50"), D("51")))

    assert decision.reason == RejectionReason.INVALID_STOP and decision.qty == 0 and decision.target is None


def test_stop_too_far_for_one_share_of_risk_is_rejected() -> None:
    # $500 budget, $600 a share at risk.
    assert decide_one(Candidate("BRK", D("1000"), D("400"))).reason == RejectionReason.RISK_BUDGET_TOO_SMALL


def test_share_price_above_the_position_cap_is_rejected() -> None:
    settings = ROOMY.model_copy(update={"max_position_notional": D("400")})

    assert decide_one(Candidate("AAPL", D("500"), D("499")), settings=settings).reason == (
        RejectionReason.MAX_POSITION_NOTIONAL
    )


def test_total_notional_left_caps_then_rejects() -> None:
    settings = RiskSettings(max_position_notional=D("20000"), max_total_notional=D("15000"))
    book = Book((Holding("MSFT", D("10000")),))

    first, second = approve([Candidate("AAPL", D("50"), D("48")), Candidate("TSLA", D("50"), D("48"))],
                            book, RICH, settings)

    assert first.approved and first.qty == D("100")  # $5,000 of room left
    assert second.reason == RejectionReason.MAX_TOTAL_NOTIONAL


def test_buying_power_caps_then_rejects() -> None:
    poor = Account(equity=D("100000"), buying_power=D("6000"))

    first, second = approve([Candidate("AAPL", D("50"), D("48")), Candidate("TSLA", D("50"), D("48"))],
                            Book(), poor, ROOMY)

    assert first.approved and first.qty == D("115")  # 6,000 / (50 × 1.04): what the broker counts, not 120
    assert second.reason == RejectionReason.BUYING_POWER  # 20 left of the 6,000 as the broker counts the first


def test_rejections_do_not_use_up_room() -> None:
    settings = ROOMY.model_copy(update={"max_open_positions": 1})

    first, second = approve([Candidate("AAPL", D("50"), D("51")), Candidate("TSLA", D("50"), D("48"))],
                            Book(), RICH, settings)

    assert not first.approved
    assert second.approved


# --- daily loss limit ---------------------------------------------------------------------------------------

def test_daily_loss_counts_realized_plus_unrealized() -> None:
    settings = RiskSettings(daily_loss_limit=D("1000"))

    assert not daily_loss_breached(D("-600"), D("-399.99"), settings)
    assert daily_loss_breached(D("-600"), D("-400"), settings)
    assert not daily_loss_breached(D("-1500"), D("600"), settings)


def test_percent_limit_applies_when_tighter_than_the_absolute_one() -> None:
    settings = RiskSettings(daily_loss_limit=D("1000"), daily_loss_limit_pct=D("0.5"))  # 0.5 % of 100k = 500

    assert daily_loss_breached(D("-500"), D("0"), settings, equity=D("100000"))
    assert not daily_loss_breached(D("-500"), D("0"), settings)  # without equity only the absolute limit


def test_tripped_daily_loss_rejects_every_candidate_and_asks_for_an_emergency_stop() -> None:
    losing = Account(equity=D("100000"), buying_power=D("400000"), realized_pnl=D("-800"), unrealized_pnl=D("-250"))

    decisions = approve([Candidate("AAPL", D("50"), D("48")), Candidate("TSLA", D("20"), D("19"))],
                        Book(), losing, ROOMY)

    assert [d.reason for d in decisions] == [RejectionReason.DAILY_LOSS_LIMIT] * 2
    assert all(d.emergency_stop and not d.approved and d.qty == 0 for d in decisions)


# --- settings and inputs ------------------------------------------------------------------------------------

def test_settings_refuse_unknown_keys_and_are_frozen() -> None:
    with pytest.raises(ValidationError, match="max_positions"):
        RiskSettings(max_positions=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RiskSettings().max_open_positions = 3  # type: ignore[misc]


def test_default_stop_is_below_a_long_and_above_a_short() -> None:
    settings = RiskSettings(default_stop_pct=D("5"))

    assert default_stop(D("40"), PositionSide.LONG, settings) == D("38")
    assert default_stop(D("40"), PositionSide.SHORT, settings) == D("42")


def test_candidate_with_a_negative_entry_is_refused_by_name() -> None:
    with pytest.raises(InvalidQuantity, match="candidate AAPL entry"):
        Candidate("AAPL", D("-1"))


# --- properties ---------------------------------------------------------------------------------------------

prices = st.decimals(min_value=D("1"), max_value=D("900"), places=2)
candidates = st.builds(
    lambda symbol, entry, stop_pct: Candidate(symbol, entry, entry * (1 - stop_pct / 100)),
    st.sampled_from(["AAPL", "MSFT", "TSLA", "NVDA", "AMD", "META", "GOOG"]),
    prices,
    st.decimals(min_value=D("0.1"), max_value=D("30"), places=1),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    batch=st.lists(candidates, max_size=10),
    book_notional=st.decimals(min_value=D("0"), max_value=D("70000"), places=2),
    equity=st.decimals(min_value=D("1000"), max_value=D("1000000"), places=2),
    buying_power=st.decimals(min_value=D("0"), max_value=D("500000"), places=2),
    total_cap=st.decimals(min_value=D("1000"), max_value=D("200000"), places=0),
)
def test_approvals_never_exceed_the_total_cap_nor_the_risk_budget(
    batch: list[Candidate], book_notional: Decimal, equity: Decimal, buying_power: Decimal, total_cap: Decimal
) -> None:
    settings = RiskSettings(max_total_notional=total_cap)
    book = Book((Holding("SPY", book_notional),))
    account = Account(equity=equity, buying_power=buying_power)

    approved = [d for d in approve(batch, book, account, settings) if d.approved]

    added = sum((d.notional for d in approved), D(0))
    assert book_notional + added <= max(total_cap, book_notional)
    assert added <= buying_power
    budget = risk_budget(equity, settings)
    for decision in approved:
        assert decision.qty >= settings.min_shares and decision.qty == decision.qty.to_integral_value()
        assert decision.qty * decision.risk_per_share <= budget
        assert decision.notional <= settings.max_position_notional
    assert len({d.symbol for d in approved}) == len(approved) <= settings.max_open_positions - 1
