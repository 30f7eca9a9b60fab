"""One actor per live position: owns its state machine (spec §3) and its orders, and keeps every share protected.

Protection rule: every entry fill is committed together with the rows of one more OCO (take-profit + stop-loss)
covering exactly the shares not yet covered, which then go straight to the broker, so protected quantity == position
quantity with no window where a filled share has no stop, and without cancelling and re-placing a working stop after
a partial fill. A rejected OCO means the price
already ran through the stop: the actor flattens at market instead of retrying forever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

import pykka
from loguru import logger

from actors import messages as m
from actors.refs import Delayed, tell_later
from catalyst.broker.calls import said_through_an_outage
from catalyst.broker.errors import RejectReason, shares_available_in
from catalyst.clock import wall_seconds
from catalyst.domain.money import lots_average
from catalyst.domain.orders import ORDER_MACHINE, OrderStatus
from catalyst.domain.positions import (Position, PositionSide, PositionStatus, exit_size, exits_from_fill,
                                       held_at_broker, replay_fills)
from catalyst.store.batch import call, unwrap_all
from catalyst.store.records import NewOrder as NewOrderRow

SIBLING_GRACE_S = 30.0  # exchange seconds to wait for an OCO sibling's cancel event before asking by REST
# Wall seconds before a flatten still waiting on its cancels asks the broker again. A backstop only: a cancel the
# broker refuses or whose reply is lost is verified by the router at once.
FLATTEN_RECHECK_S = 2.0
# A flatten's wait is said at its first recheck, then about once a minute; the rechecks between, and the failures of
# their cancels and reads the broker does not answer, are DEBUG lines. Through an outage each recheck was some 25
# WARNING lines (its own, its cancels' and its reads', each failed call's), every 2 s for as long as it lasted.
FLATTEN_RECHECKS_SAID_EVERY = round(60 / FLATTEN_RECHECK_S)
# Wall seconds: the longest wait between a closed position's asks that its orders still working end (_check_siblings).
SIBLINGS_ASKED_AGAIN_MAX_S = 60.0
STOP_CANCEL_RECHECK_S = 1.0  # the daemon stopping: its entry's cancel asked again this often within the stop's wait
# Wall seconds before protecting again when the broker rejected both the stop and the market exit: 2, 4, 8 … 60.
PROTECT_RETRY_FIRST_S, PROTECT_RETRY_MAX_S = 2.0, 60.0
PROTECT_RETRY_SAID_EVERY = 60  # past the first few, a failure that lasts (late shares' broker reads) is said hourly
# While the market is closed a refusal lasts (a stop already through the last price stays so until the open): asked
# again at most every 10 minutes, said once an hour, not two rejected rows a minute all weekend.
PROTECT_RETRY_OVERNIGHT_MAX_S, PROTECT_RETRY_OVERNIGHT_SAID_EVERY = 600.0, 6
# Exchange seconds between looks at the market hours for a flatten asked while the market was closed (_flatten).
MARKET_OPEN_RECHECK_S = 60.0
OVERNIGHT_CANCEL = "the market closed before it filled; kept under stops overnight"
# Wall seconds an OCO leg may stay working alone (its sibling ended unfilled) before the broker is asked about it: in
# the normal case the broker cancelled the sibling because this leg filled, and that fill's event is a moment behind.
LONE_LEG_GRACE_S = 2.0
# A lone stop leg whose take-profit ended `replaced` is how Alpaca reports a triggered stop (alpaca-py #198: "if the
# stop loss price is hit, the take profit order status changes to Replaced and the stop loss order status changes to
# Filled"): the stop is executing, the one exit in flight. It is not cancelled after LONE_LEG_GRACE_S (a thin stock or
# a halt can hold its fill longer; cancelled, the shares would be bare until a new stop, already through the market,
# was refused and a market exit sent), but asked about by REST after each of these wall-second waits; past them it is
# kept alone, the shares under it with no take-profit (a replace for another reason: a corporate action).
TRIGGERED_STOP_LOOKS_S = (2.0, 4.0, 8.0, 16.0, 30.0)
# Wall seconds an entry's new shares may wait for the OCO still on its way to the broker (rows committed, no answer
# yet) while the entry keeps filling, to be protected with the shares that follow in one OCO once it is answered.
# Pieces recorded together (a restart's catch-up, a burst of partial fills) otherwise sent one OCO each, all on the
# wire before the first answer: Alpaca refusing the first (a potential wash trade while the entry works) refused every
# one of them, and a thin stock's entry split into dozens of small OCOs, each a call of the 200 a minute. Past this,
# they are protected without waiting: an answer lost or held back (a 429) never holds them longer.
PROTECTION_COALESCE_S = 1.0
STOP_WRITE_S = 5.0  # how long a position actor stopping waits for the database to write its waiting pieces' OCO
# Wall seconds a flatten holds its market exit for entry shares the broker reports bought and we have no execution
# for (the router's catch-up brings them in seconds). Past it, the recorded shares go and those are left to the
# doctor: a catch-up that cannot find them must not keep every share of the position without a stop.
ENTRY_FILLS_WAIT_S = 30.0
# A rebuilt position whose book has an OCO leg `replaced` with no replacement after it (a kill between the two
# commits) asks the broker about that leg this often (wall seconds) until the router answers: with the replacement to
# follow (m.OrderReplaced), or with the leg as the broker has it (no order to follow: Alpaca's triggered stop).
# Meanwhile no OCO and no market exit is sent for those shares: the replacement may hold them, or have sold them
# (chaos, seed 297: a flatten sold 335 shares a moved stop had sold, and left the account short). Never given up on:
# guessing either way can sell the shares twice, and a broker that cannot answer a read takes no order either.
# The first REPLACEMENT_ASKS_SAID_EVERY asks (a minute) come REPLACEMENT_ASK_S apart, then twice as far apart each time
# up to PROTECT_RETRY_MAX_S: a broker that cannot answer for minutes is asked once a minute, not 12 times (each ask is
# a read of the account's 200 a minute, spent for as long as the answer does not come).
REPLACEMENT_ASK_S = 5.0
REPLACEMENT_ASKS_SAID_EVERY = 12


def replacement_ask_wait_s(asks: int) -> float:
    """Wall seconds from ask number `asks` (1, 2, ...) to the next."""
    return min(REPLACEMENT_ASK_S * 2 ** max(asks - REPLACEMENT_ASKS_SAID_EVERY, 0), PROTECT_RETRY_MAX_S)


# Late entry shares (_sell_late_entry_shares): the broker is asked what it holds this many times, LATE_SHARES_RETRY_S
# apart, before they are left to the doctor.
LATE_SHARES_READS = 5
LATE_SHARES_RETRY_S = 5.0
# Wall seconds between the OCO's tries after the broker refused it for want of free shares (NO_SHARES_AVAILABLE), one
# wait a try, the last repeated: Alpaca's order entry can lag a fill by several seconds (ALPACA.md §7; Alpaca-API #276,
# a sell refused for "insufficient qty" while its positions already showed the shares, up to 10 s), and a stop sent
# milliseconds after the fill meets it. Tried for NO_SHARES_WINDOW_S after the first refusal or the entry's last
# execution, whichever is later (an entry filling in pieces meets the lag at each); a refusal while a try waits adds
# none. Past it, the shares are left to the router's catch-up and the doctor's pass (their fills recorded elsewhere, or
# sold by hand). An OCO is exit only: where the shares are really gone, a try is refused again.
NO_SHARES_RETRY_S = (1.0, 2.0, 4.0, 8.0)
NO_SHARES_WINDOW_S = 15.0
# Wall seconds: shares left to the doctor's pass, it is asked for one at once, again no sooner than this (the periodic
# pass's own interval at the shipped speed): see _doctor_pass_wanted.
DOCTOR_ASKED_AGAIN_S = 300.0
# Reads of a broker position that holds fewer shares than the late ones before they are left as sold by hand: Alpaca's
# positions can lag its orders for several seconds after a fill (ALPACA.md §7), and late shares were just recorded.
LATE_SHARES_LAG_READS = 3
# Before a market exit the broker is asked what it holds of the position's shares (_held_for_exit): shares sold outside
# Catalyst while it runs (its OCO cancelled by hand, then a hand sale) are recorded nowhere here until the doctor's
# pass, and an exit of them would sell short. A read that fails is made again, FLATTEN_RECHECK_S apart, this many times
# in all before the exit goes for the shares recorded: a positions answer that cannot be read (one the adapter refuses
# as malformed) must not hold bare shares from their exit for good.
EXIT_READ_TRIES = 3
EXIT_READ_ANSWER_S = 10.0  # a read not answered by then is made again
# Wall seconds: the broker holding none of the shares, asked again this often; and an exit cut to what the broker held,
# the rest asked about again this long after its fill (a list read sooner can still show the shares it sold).
EXIT_NONE_RECHECK_S = 30.0
# Wall seconds after a fill before a market exit reads the broker's positions, where the list can still show shares
# that fill sold and an exit sized by it would sell them again, short (ALPACA.md §7: several seconds; Alpaca-API #276:
# up to 10 s): a fill of an order Catalyst did not place on the exit side of the position's symbol (a hand sale,
# FilledOutside), and this position's own exit that filled with shares left (_go_on_after_a_filled_exit). Fills outside
# Catalyst that keep coming put the read off at most OUTSIDE_FILLS_MAX_WAITS of these past the first (another program
# trading the symbol must not keep shares with no stop from their exit for good).
POSITIONS_SETTLE_S = 15.0
OUTSIDE_FILLS_MAX_WAITS = 2
# Reads of the broker's position, POSITIONS_SETTLE_S apart, after protection was given up on for want of shares,
# while the list shows every recorded share (_on_protection_read): it can lag the hand sale that took them.
PROTECTION_READS = 3


# A market exit that ends in one of these has failed, for the shares it left (_exit_failed). (FILLED can be announced
# before its execution, with filled_qty still 0: it is never a failure.)
EXIT_FAILED = (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED)
ACKNOWLEDGED = (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED)  # at the broker, working
# A broker refusal that means the shares are not there to sell: a market exit would sell short (broker.errors).
NO_SHARES_AVAILABLE = f"rejected[{RejectReason.INSUFFICIENT_QTY}]"
WASH_TRADE = f"rejected[{RejectReason.WASH_TRADE}]"


def protect_retry_wait_s(rejections: int, longest_s: float | None = None) -> float:
    """The wait before the `rejections`-th try, at most `longest_s` (PROTECT_RETRY_MAX_S): its exponent capped, as a
    refusal can last all night (2.0 * 2 ** 1024 overflows a float, which crashed the actor after some 17 hours: a
    review)."""
    longest = PROTECT_RETRY_MAX_S if longest_s is None else longest_s
    return min(PROTECT_RETRY_FIRST_S * 2 ** min(max(rejections - 1, 0), 16), longest)


class CheckSiblings(m.Message):
    pass


class CheckFlatten(m.Message):
    pass


class CheckLoneLegs(m.Message):
    pass


class CheckLateEntryFills(m.Message):
    """Closed while its entry's last shares have no recorded execution: have they come?"""


class CheckLateShares(m.Message):
    """Ask the broker again what it holds: its last answer was an error."""


class CheckEntryCancel(m.Message):
    """The entry's rest was asked to be cancelled so its shares can be protected: is it gone yet?"""


class RetryProtection(m.Message):
    """Protection the broker refused while the market is closed: time to ask for it again."""


class RetryRefusedForShares(m.Message):
    """Protection the broker refused for want of free shares: time to try again (NO_SHARES_RETRY_S)."""


class ReadHeldForProtection(m.Message):
    """Ask the broker again what it holds, for protection (its positions list can lag a hand sale)."""


class CoalesceEnded(m.Message):
    """The wait for an OCO on its way has ended (PROTECTION_COALESCE_S): protect the pieces that waited for it. Not
    the doctor's m.CheckProtection, which also says the broker holds the shares recorded (_protect_cap)."""


class AskAboutReplacements(m.Message):
    """Legs restored `replaced` still wait for the router's word: ask the broker about them again."""


class CheckMarketOpen(m.Message):
    """A flatten asked while the market was closed waits for it to open: has it?"""


@dataclass
class OrderView:
    role: str
    status: OrderStatus = OrderStatus.CREATED
    filled_qty: Decimal = Decimal(0)  # as the broker last reported it
    applied_qty: Decimal = Decimal(0)  # shares its executions put on (entry) or took off (exit) the position
    acknowledged: bool = False  # seen working at the broker (submitted or accepted)

    @property
    def working(self) -> bool:
        return self.status not in ORDER_MACHINE.terminal


@dataclass
class OcoPair:
    take_profit: int
    stop_loss: int
    qty: Decimal


class PositionActor(pykka.ThreadingActor):
    def __init__(self, plan: m.TradePlan, router: Any, writer: Any, system: Any, clock: Any,
                 restored: Any = None, market_closed: Callable[[], bool] | None = None,
                 ask_doctor: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self.plan, self.router, self.writer, self.system, self.clock = plan, router, writer, system, clock
        # Asks the doctor for a pass now (TradingSystem._ask_doctor), when shares are left to one; None: no doctor
        self._ask_doctor = ask_doctor
        self._doctor_asked_at = float("-inf")  # time.monotonic() it last asked
        self.position = Position(symbol=plan.symbol, side=plan.side)
        self.position_id: int | None = None
        self.entry_order_id: int | None = None  # its first entry's: the position's key, whatever replaced that entry
        self.entries: list[int] = []  # its entry and the orders that replaced it at the broker, the working one last
        # (price, stop, target): the stop and target planned for an entry at that price; an entry paying worse gets
        # them moved by the difference (exits_from_fill). The plan's sized price; after a rebuild, the first fill's.
        self.exits_basis: tuple[Decimal, Decimal, Decimal] | None = (
            None if plan.entry_price is None else (plan.entry_price, plan.stop_loss, plan.take_profit))
        self.orders: dict[int, OrderView] = {}
        self.pairs: list[OcoPair] = []
        self.flattening = False
        self.flatten_reason = ""
        self.flatten_since: datetime | None = None  # exchange time the flatten began (the doctor's stuck test)
        self.exit_sent = False
        self.exit_order_id: int | None = None  # the market exit now working: only its ending fails the flatten
        self._exits_gone_on_from: set[int] = set()  # exits filled with shares left, each followed by one more exit
        self._exit_row_pending = False  # a market exit asked of the router whose row it has not named yet
        self._waiting_for_exit_fills = False  # said once: a flatten found its exits filled at the broker
        self._waiting_for_entry_fills = Decimal(0)  # said once per quantity: a flatten waits for entry executions
        self._entry_fills_waited_since: float | None = None  # time.monotonic() the flatten began waiting for them
        self._gave_up_on_entry_fills = False  # said once: past ENTRY_FILLS_WAIT_S, the recorded shares went
        self._kept_overnight = False  # the market closed while flattening (KeepOvernight): its exit was cancelled
        # Whether the market is closed now (catalyst.hooks.MarketHours: the broker's calendar), asked before a market
        # exit of this actor's own accord, which would wait for the open with no stop under the shares. Asked at the
        # moment, not latched: an answer kept from a rebuild would last into the day. None: the cycle's word only.
        self.market_closed = market_closed
        self._told_closed = False  # KeepOvernight came, and no flatten (the cycle's, at the open) since
        self._refused_overnight: set[int] = set()  # OCO pairs (by take-profit id) refused while the market is closed
        self._protection_held = False  # refused while closed: not asked again until RetryProtection
        self._flatten_when_market_opens: str | None = None  # a flatten asked while closed, done once it opens
        self._market_timer: Delayed | None = None
        self._flatten_timer: Delayed | None = None
        self._flatten_asks = 0  # rechecks in a row that found orders still working and asked the broker again
        self._flatten_asked_since = 0.0  # time.monotonic() of the first of them
        self._timer: Delayed | None = None
        self._sibling_asks = 0  # closed: checks in a row that found its orders still working and asked the broker
        self._lone_timer: Delayed | None = None
        # Lone stops whose take-profit was replaced: REST looks made at each, and when its next is due (monotonic).
        self._triggered_stop_looks: dict[int, tuple[int, float]] = {}
        self._kept_lone_stops: set[int] = set()  # such stops still working past the looks: kept, never cancelled
        # OCO legs restored `replaced` with no replacement in the book: the router has not answered about them yet
        self._awaited_replacements: set[int] = set()
        self._replacement_asks = 0
        self._replacement_timer: Delayed | None = None
        self._finished = False  # told the system and asked to stop: messages still queued must not do it again
        self._handed_over = False  # stopped for a rebuild: entry shares came after the close
        # Rebuilt for entry shares recorded after the close: asking the broker whether it holds them (nothing is sent
        # meanwhile), and how many times it has been asked.
        self._asking_broker = False
        self._selling_late_shares = False  # rebuilt to sell entry shares recorded after its row closed
        # That sale queued for the open while the market is closed (their stops refused, or kept by a restart): what
        # settles them; the close's KeepOvernight leaves it be (a review: cancelled, stops refused, queued again).
        self._sale_stands_overnight = False
        self._late_fills_waited_since: float | None = None  # time.monotonic() a closed position began waiting for them
        self._late_share_reads = 0
        self._late_shares_short_reads = 0  # answers showing fewer shares than the late ones (a list lagging a fill?)
        # The broker's position read before a market exit (_held_for_exit): when it was asked (time.monotonic()), its
        # answer kept for the exit, failed reads in a row, answers short of the shares within a fill's lag, whether
        # "holds none" was said, and the shares the last exit left out as not at the broker.
        self._exit_read_asked_at: float | None = None
        self._exit_read_held: Decimal | None = None
        self._exit_last_held: Decimal | None = None  # the flatten's last answer read: failures never go past it
        self._exit_read_not_before = 0.0  # time.monotonic(): no read before then
        # Exit-side fills Catalyst did not place since the last exit read taken (time.monotonic()): the first, the last
        self._outside_first_at: float | None = None
        self._outside_fill_at = float("-inf")
        # When this flatten's exit read was first put off or set aside for them (time.monotonic()): the cap on the
        # whole wait, however the fills fall around the reads (a review: one inside each read's round trip began a new
        # run each time, and the answer was set aside for as long as they came)
        self._outside_wait_began: float | None = None
        self._outside_fills_said: set[tuple[str, str | None]] = set()  # (broker id, own_leg): each said once
        self._restored_at = float("-inf")  # time.monotonic() of a rebuild: its entry's last fill may be a moment ago
        self._exit_read_failures = 0
        self._exit_lag_reads = 0
        self._exit_none_said = False
        self._exit_cut = Decimal(0)
        self._flatten_when_open: str | None = None  # a flatten asked while pending, for shares that fill anyway
        # Protections the broker rejected since one was last accepted: with the exit they fall back on rejected too,
        # the broker takes neither, and trying both again at once would loop as fast as it answers (_exit_failed).
        self._protection_rejections = 0
        self._refused_no_shares: set[int] = set()  # OCO pairs (by take-profit id) refused for want of free shares
        # Since protection was last accepted: tries after such refusals, when the first came (time.monotonic()), and
        # the try waiting (NO_SHARES_RETRY_S); the entry's last execution (time.monotonic()) moves the window on.
        self._no_shares_tries = 0
        self._no_shares_since: float | None = None
        self._no_shares_timer: Delayed | None = None
        # Protection given up on for want of shares (past NO_SHARES_WINDOW_S): the broker is asked what it holds free
        # (again while its list shows every share, PROTECTION_READS in all), and fewer than recorded (a partial sale by
        # hand, a hand order holding some) are protected at that number until an execution changes the position (the
        # doctor's heal writes the sale as its exit), the doctor finds every share held, or a restart:
        # _on_protection_read.
        self._held_read_asked = False
        self._held_reads = 0  # of this give-up: a list showing every share may lag the sale (PROTECTION_READS)
        self._held_read_timer: Delayed | None = None
        self._protect_cap: Decimal | None = None
        # Fills on the exit side of orders Catalyst did not place (a hand sale), heard since this position's last entry
        # execution and not written as its exit yet, by key: a refusal for want of shares they explain caps protection
        # at once (_cap_at_refusal), and the capped OCO goes when the refused pair's other leg is answered too.
        self._sold_outside: dict[str, Decimal] = {}
        self._capped_at_refusal: int | None = None
        # OCO pairs (by take-profit id) tried because an order Catalyst did not place ended (_on_order_outside_ended):
        # a refusal of one names the shares that order let go of free, and caps protection at once (_cap_at_refusal).
        self._tried_after_outside_end: set[int] = set()
        # Orders Catalyst did not place working in this symbol (a trader's limit sell), as the router hears of them:
        # broker id -> (side, shares still to fill). Those on the exit side hold shares the broker does not count free
        # for a stop: a refusal for want of shares they explain caps protection at once (_cap_at_refusal).
        self._working_outside: dict[str, tuple[str, Decimal]] = {}
        self._entry_filled_at = 0.0
        # A flatten whose market exit the broker refused for shares its order entry had not caught up with yet: done
        # again once their OCO is taken (the broker has them then), not left to the cycle's retry 30-60 s later, or
        # never for a flatten the cycle did not ask (the doctor's, a full disk's).
        self._flatten_after_lag: str | None = None
        # Protection refused as a potential wash trade while the entry still worked: the entry's rest is being
        # cancelled, and its shares are protected once it has ended (an OCO before that is refused the same way).
        self._protect_after_entry = False
        self._entry_withdrawn: str | None = None  # why the entry's rest is being cancelled, the daemon stopping
        self._entry_cancel_timer: Delayed | None = None
        self._wash_refused: set[int] = set()  # OCO pairs (by take-profit id) refused as a potential wash trade
        self._reprotected_after_wash = False  # once: a refusal that came after the entry had ended
        self._retry_timer: Delayed | None = None
        self._coalesce_timer: Delayed | None = None
        self._sent_at: dict[int, float] = {}  # OCO pairs (by take-profit id): time.monotonic() their rows were counted
        # Entry executions applied with no OCO of their own, (qty, price), since protection was last sent: their own
        # prices set the stop and target of the OCO that covers them (_protect).
        self._unprotected_pieces: list[tuple[Decimal, Decimal]] = []
        self._cancels_asked: set[int] = set()  # orders this actor asked the router to cancel
        self._cancelled_elsewhere: set[int] = set()  # OCO pairs (by take-profit id) said cancelled at the broker
        self.restored = restored
        self.log = logger.bind(actor="position")

    @property
    def label(self) -> str:
        ident = f"p-{self.position_id}" if self.position_id else f"o-{self.entry_order_id or '?'}"
        return f"{self.plan.symbol}#{ident}"

    # --- lifecycle --------------------------------------------------------------------------------------------

    def on_start(self) -> None:
        if self.restored is not None:
            self._restore(self.restored)
            self.restored = None
        else:
            self.router.tell(m.PlaceEntry(owner=self.actor_ref, plan=self.plan))

    def on_stop(self) -> None:
        if self._unprotected_pieces and not self._finished and not self._handed_over:
            # The daemon stopping while pieces wait for an OCO in flight: their own OCO now, or they would have no
            # row at all while it is down (the router, stopped after the positions, still sends it; unsent, the next
            # start sends the rows it finds created).
            bare = self._unprotected_qty()
            try:  # bounded: a database another program holds locked must not hold up the daemon's stop
                self._protect(coalesce=False, write_timeout_s=STOP_WRITE_S)
            except Exception as exc:  # noqa: BLE001 - the stop goes on; the next start protects them from its book
                why = (f"the database did not answer within {STOP_WRITE_S:g} s" if isinstance(exc, pykka.Timeout)
                       else f"{type(exc).__name__}: {exc}")
                self.log.error(f"position {self.label} could not protect {bare} shares while stopping ({why}); the "
                               "next start protects them")
        for timer in (self._timer, self._flatten_timer, self._lone_timer, self._retry_timer, self._entry_cancel_timer,
                      self._coalesce_timer, self._market_timer, self._no_shares_timer, self._replacement_timer,
                      self._held_read_timer):
            if timer:
                timer.cancel()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.log.error(f"position {self.label} crashed: {exception_type.__name__}: {exception_value}")
        if self.entry_order_id is not None:
            deferred = self._flatten_when_market_opens
            self.system.tell(m.PositionCrashed(key=self.label, entry_order_id=self.entry_order_id,
                                               error=str(exception_value), owner=self.actor_ref,
                                               for_successor=m.Flatten(reason=deferred) if deferred else None))

    def on_receive(self, message: Any) -> Any:
        if self._handed_over:
            # Handed over to be rebuilt (late entry shares, a stale book): the next actor reads the database, and
            # what this one would decide now (a flatten's cancels and exit, an OCO) would be on what it no longer owns.
            # The cycle's word (a flatten, the close) is not in the database: it goes to the next actor.
            if isinstance(message, m.Flatten | m.KeepOvernight) and self.entry_order_id is not None:
                self.system.tell(m.ForSuccessor(entry_order_id=self.entry_order_id, message=message))
            return None
        if isinstance(message, m.OrderUpdated):
            self._on_order_updated(message)
        elif isinstance(message, m.PrepareEntryFill):
            return self._prepare_entry_fill(message)
        elif isinstance(message, m.EntryFillCommitted):
            self._on_order_updated(message.update, committed=message)
        elif isinstance(message, m.OrdersCreated):
            self._on_orders_created(message)
        elif isinstance(message, m.OrderReplaced):
            self._on_order_replaced(message)
        elif isinstance(message, m.Flatten):
            self._flatten(message.reason, scheduled=message.scheduled)
        elif isinstance(message, CheckSiblings):
            self._check_siblings()
        elif isinstance(message, CheckFlatten):
            self._check_flatten()
        elif isinstance(message, CheckLoneLegs):
            self._check_lone_legs()
        elif isinstance(message, CheckEntryCancel):
            self._check_entry_cancel()
        elif isinstance(message, m.BrokerPositionRead):
            if message.for_protection:
                self._on_protection_read(message)
            elif message.for_exit:
                self._on_exit_read(message)
            else:
                self._on_broker_position(message)
        elif isinstance(message, m.FilledOutside):
            self._on_filled_outside(message)
        elif isinstance(message, m.OrderOutsideEnded):
            self._on_order_outside_ended(message)
        elif isinstance(message, m.OrderOutsideWorking):
            if message.qty > 0:
                self._working_outside[message.broker_id] = (message.side, message.qty)
            else:
                self._working_outside.pop(message.broker_id, None)
        elif isinstance(message, CheckLateEntryFills):
            self._finish_if_done()
        elif isinstance(message, CheckLateShares):
            self.router.tell(m.ReadBrokerPosition(symbol=self.plan.symbol, reply_to=self.actor_ref))
        elif isinstance(message, m.CheckProtection):
            # The doctor's: it finds protection missing only where the broker holds the shares recorded, so a cap
            # set by an earlier read (a hand sale since bought back) no longer measures them.
            self._protect_cap = None
            self._protect()
        elif isinstance(message, CoalesceEnded):
            self._protect()
        elif isinstance(message, ReadHeldForProtection):
            self._read_held_for_protection(again=True)
        elif isinstance(message, CheckMarketOpen):
            self._check_market_open()
        elif isinstance(message, RetryProtection):
            self._protection_held = False
            self._protect()
        elif isinstance(message, AskAboutReplacements):
            self._ask_about_replacements()
        elif isinstance(message, RetryRefusedForShares):
            self._no_shares_timer = None
            self._protect()
        elif isinstance(message, m.WithdrawEntry):
            self._withdraw_entry(message.reason)
        elif isinstance(message, m.KeepOvernight):
            self._told_closed = True
            self._keep_overnight()
        elif isinstance(message, m.StaleBook):
            self._hand_over_stale_book(message.detail)
        return None

    def state(self) -> dict[str, Any]:
        """For the state table and SIGUSR1 dumps."""
        return {
            "position": self.label, "entry": self.entry_order_id, "cycle_id": self.plan.cycle_id,
            "status": str(self.position.status),
            "qty": str(self.position.quantity),
            "avg": str(self.position.avg_entry_price), "protected": str(self.protected_qty()),
            "protected_at_broker": str(self.protected_qty(acknowledged=True)),
            "orders": {i: f"{v.role}:{v.status}" for i, v in self.orders.items()},
            "flattening": self.flatten_reason if self.flattening else None,
            "flattening_since": self.flatten_since.isoformat() if self.flattening and self.flatten_since else None,
        }

    # --- handlers ---------------------------------------------------------------------------------------------

    def _on_orders_created(self, msg: m.OrdersCreated) -> None:
        for role, order_id in msg.roles.items():
            self.orders[order_id] = OrderView(role=role)
            if role == "entry":
                self.entry_order_id = order_id
                self.entries = [order_id]
                self.system.tell(m.PositionEntry(entry_order_id=order_id, owner=self.actor_ref))
                self.log.info(f"position {self.label} pending {self.plan.side} {self.plan.qty} "
                              f"stop={self.plan.stop_loss} target={self.plan.take_profit}")
                if self._entry_withdrawn is not None:  # the daemon began stopping before its row was named
                    self._ask_entry_cancel()
                elif self._flatten_when_open is not None:
                    # Flattened before its row was named (an emergency stop as it opened): the flatten's cancel was of
                    # nothing, and the entry went to the broker all the same, free to buy.
                    self._cancel((order_id,), reason=self._flatten_when_open)
                    self._start_flatten_timer()
            elif role == "flatten":
                self.exit_order_id = order_id
                self._exit_row_pending = False
                if self._kept_overnight:
                    # The close came after this exit was asked and before its row was named (_keep_overnight): it
                    # would wait for the next open beside the stops put back, and the broker refuses the second.
                    self.log.warning(f"position {self.label} market exit o-{order_id} named after the close: "
                                     "cancelling it, the shares are kept under stops overnight")
                    self._cancel((order_id,), reason=OVERNIGHT_CANCEL)
                    self._start_flatten_timer()

    def _on_order_replaced(self, msg: m.OrderReplaced) -> None:
        """One of its orders was replaced at the broker (by hand, say: a stop moved in Alpaca's dashboard): the new
        order takes the old one's place, an OCO leg in its pair, so the pair stays whole and the shares stay under
        it. Its own updates follow this message. While flattening, or once closed, the replacement is cancelled like
        any order left working then: a stop moved mid-flatten would otherwise sell beside the market exit."""
        old = self.orders.get(msg.replaced_order_id)
        sold = old.filled_qty if old is not None else Decimal(0)
        if old is not None:
            old.status = OrderStatus.REPLACED
        self.orders[msg.new_order_id] = OrderView(role=msg.role, status=OrderStatus.SUBMITTED, acknowledged=True)
        self._awaited_replacements.discard(msg.replaced_order_id)
        if msg.role == "entry":
            self._entry_replaced(msg, sold)
            return
        for pair in self.pairs:
            if msg.replaced_order_id in (pair.take_profit, pair.stop_loss):
                if pair.take_profit == msg.replaced_order_id:
                    pair.take_profit, other = msg.new_order_id, self.orders.get(pair.stop_loss)
                else:
                    pair.stop_loss, other = msg.new_order_id, self.orders.get(pair.take_profit)
                # protected_qty counts a pair as its qty less both legs' fills: the old leg's fills leave with it, and
                # the new order covers its own qty beyond what the other leg has sold already (an OCO's stop shrinks
                # as its take-profit fills; a review: 40 counted of 70 held, OCO after OCO refused for the rest).
                pair.qty = min(pair.qty - sold, msg.qty + (other.filled_qty if other is not None else Decimal(0)))
        self._triggered_stop_looks.pop(msg.replaced_order_id, None)
        self._kept_lone_stops.discard(msg.replaced_order_id)
        if self.exit_order_id == msg.replaced_order_id:
            self.exit_order_id = msg.new_order_id
        self.log.warning(f"position {self.label} its {msg.role.replace('_', '-')} o-{msg.replaced_order_id} was "
                         f"replaced at the broker by o-{msg.new_order_id} ({msg.detail}): following it")
        if self.position.status is not PositionStatus.OPEN or (self.flattening and not self.exit_sent) \
                or msg.replaced_order_id in self._cancels_asked:
            why = "its position is closed" if self.position.status is PositionStatus.CLOSED else (
                f"flatten: {self.flatten_reason}" if self.flattening else "it replaced an order being cancelled")
            self._cancel((msg.new_order_id,), reason=why)

    def _on_order_updated(self, msg: m.OrderUpdated, committed: m.EntryFillCommitted | None = None) -> None:
        """An order of ours moved. `committed`: the router already committed this entry execution together with the
        writes _prepare_entry_fill planned for it, and sent the OCO on."""
        if msg.execution is not None and msg.role == "entry" and self.position.status is PositionStatus.CLOSED:
            self._hand_over_late_entry_shares(msg.execution)
            return
        if msg.cancel_asked:  # by this actor, or by the one it was rebuilt from: not a cancel made by hand
            self._cancels_asked.add(msg.order_id)
        self._awaited_replacements.discard(msg.order_id)  # the router's word on it: no replacement to follow
        view = self.orders.setdefault(msg.order_id, OrderView(role=msg.role))
        view.status, view.filled_qty = msg.status, max(view.filled_qty, msg.filled_qty)
        view.acknowledged = view.acknowledged or msg.status in ACKNOWLEDGED
        if msg.execution is not None:
            self._apply_execution(msg.role, msg.execution, committed)
            view.applied_qty += msg.execution.qty
        if msg.role == "entry":
            self._after_entry_status(msg)
            if self._protect_after_entry and not view.working:
                self._protect_after_entry = False
                self._protect()
            elif msg.execution is not None and not self._protect_after_entry:
                # Shares whose fill was planned while protection waited for the entry's cancel (the router's plan,
                # then this cancel, then the fill's commit): no OCO came with them. A no-op when one did.
                self._protect()
        elif (msg.role == "flatten" and msg.status in EXIT_FAILED and self.exit_sent
              and msg.order_id == self.exit_order_id):
            # Unfilled, or partly: an exit cancelled at the close or expired with shares left (a thin stock at
            # 15:55). Those shares are protected again, never left bare under a flatten that has nothing working.
            # Only the exit now working: an earlier one's late execution comes with its status (cancelled), and
            # would otherwise fail the flatten in progress and put an OCO beside its working exit.
            self._exit_failed(msg)
        elif not self.position.is_terminal and self.position.status is PositionStatus.OPEN:
            if (msg.status is OrderStatus.REJECTED and msg.role in ("take_profit", "stop_loss")
                    and NO_SHARES_AVAILABLE in (msg.reason or "")):
                self._protection_refused_no_shares(msg)
            elif (msg.status is OrderStatus.REJECTED and msg.role in ("take_profit", "stop_loss")
                    and WASH_TRADE in (msg.reason or "") and self._on_wash_trade_refusal(msg)):
                pass
            elif (msg.status is OrderStatus.REJECTED and msg.role in ("take_profit", "stop_loss")
                    and not self.flattening and self._market_is_closed()):
                self._protection_refused_overnight(msg)
            elif msg.status is OrderStatus.REJECTED and msg.role in ("take_profit", "stop_loss"):
                # Usually a stop already through the market; whatever the reason, a market exit instead. Its other
                # leg's rejection comes next, and with no order left working the exit goes (_exit_when_clear below).
                if not self.flattening:
                    self._protection_rejections += 1
                self._flatten(f"protection rejected ({msg.reason}): a market exit instead")
            else:
                if msg.role in ("take_profit", "stop_loss") and msg.status in ACKNOWLEDGED:
                    self._protection_rejections = self._no_shares_tries = 0
                    self._no_shares_since, self._held_read_asked, self._held_reads = None, False, 0
                    self._flatten_once_caught_up()
                if msg.status is OrderStatus.CANCELLED and msg.role in ("take_profit", "stop_loss"):
                    self._say_if_cancelled_elsewhere(msg.order_id)
                self._protect()
        if self._flatten_when_open is not None and self.position.status is PositionStatus.OPEN:
            reason, self._flatten_when_open = self._flatten_when_open, None
            self._flatten(f"{reason} (asked while its entry was pending)")
        self._exit_when_clear()
        self._finish_if_done()

    def _prepare_entry_fill(self, msg: m.PrepareEntryFill) -> m.EntryFillPlan | None:
        """The writes an entry execution calls for, for the router to commit with the execution itself. Changes
        nothing here: the router's EntryFillCommitted (or, if it could not, a plain OrderUpdated) follows."""
        if self.position.is_terminal or msg.order_id not in self.entries:
            return None
        plan = self._entry_fill_writes(msg.execution)[1]
        if plan.protection_at is not None and self._unprotected_qty(capped=False) > 0:  # its OCO is sized uncapped
            # Shares bare now (pieces waiting for an OCO on its way, a stop cancelled by hand): the plan's OCO covers
            # them too, and the answer or timer that protects them could come between this plan and its commit,
            # covering them twice. The usual way instead (commit, then told): this actor decides both in turn.
            return None
        return plan

    def _apply_execution(self, role: str, execution: m.Execution,
                         committed: m.EntryFillCommitted | None = None) -> None:
        before = self.position
        protection: list[Any] = []
        self._protect_cap = None  # what the broker held no longer measures the shares: protected as recorded again
        # An entry fill may be behind in order entry (a refusal then is its lag, not the sales counted): counted afresh.
        # The doctor's exit writes a sale outside Catalyst as this position's (keyed as the router told it): that sale
        # leaves the tally, all of it if it was not told so. The position's own stop or target filling records none of
        # them (a review: forgotten then, a refusal they explain went the window's way, an ERROR after 15 s of tries).
        if role == "entry" or (role == "exit" and self._sold_outside.pop(execution.key, None) is None):
            self._sold_outside.clear()
        if role == "entry":
            self._entry_filled_at = time.monotonic()
            # The fill's position change and the OCO covering its shares: one commit, then the broker call.
            if committed is not None:  # what was committed is the plan answered then, whatever happened since
                after = self._after_entry_fill(execution)  # the plan itself was made when the router asked
                plan, values = committed.plan, list(committed.values)
            else:
                after, plan = self._entry_fill_writes(execution)
                values = unwrap_all(self.writer.batch(plan.calls).get())
            if self.position_id is None:
                self.position_id = values[0][0].position_id  # open_position_with_orders: (position, rows)
            self._say_exits(execution)  # as the writes just committed were planned
            protection = plan.protection_rows(values)
        else:
            after = before.apply_fill(before.exit_side, execution.qty, execution.price)
        self.position = after
        if role != "entry":
            self._write_position(after, execution.at)
        if before.status is not after.status:
            self.log.info(f"position {self.label} {before.status} → {after.status} qty={after.quantity} "
                          f"avg={after.avg_entry_price}" + (f" realized={after.realized_pnl}" if after.status is PositionStatus.CLOSED else ""))
        else:
            self.log.info(f"position {self.label} {role} fill {execution.qty} @ {execution.price} → qty={after.quantity}")
        if role == "entry":
            if protection:
                self._unprotected_pieces.clear()  # the plan's OCO covered every unprotected share (_entry_fill_writes)
            elif after.status is PositionStatus.OPEN:
                self._unprotected_pieces.append((execution.qty, execution.price))
                if self._waits_for_protection_in_flight():
                    self._arm_coalesce_timer()
        if protection and committed is None:
            self._submit_protection(protection)
        elif protection:  # the router has sent this OCO on already
            self._count_protection(protection)
            if self.flattening:  # a flatten came between the router's question and its commit: call the OCO off
                self._cancel(tuple(r.order_id for r in protection), reason=f"flatten: {self.flatten_reason}")
        elif after.status is PositionStatus.CLOSED:
            self._after_close()

    def _after_entry_fill(self, execution: m.Execution) -> Position:
        return self.position.apply_fill(self.position.entry_side, execution.qty, execution.price)

    def _exits_at(self, price: Decimal) -> tuple[Decimal, Decimal]:
        """(stop, target) for shares bought (sold short) at `price`: the planned distances from it when it is worse
        than the price they were planned for, so every share's loss at its stop stays what risk allowed; the plan's
        own prices when it is not, or when no such price is known (a plan without one, a rebuild before any fill)."""
        if self.exits_basis is None:
            return self.plan.stop_loss, self.plan.take_profit
        return exits_from_fill(self.plan.side, *self.exits_basis, price)

    def _say_exits(self, execution: m.Execution) -> None:
        exits = self._exits_at(execution.price)
        if self.exits_basis is None or exits == self.exits_basis[1:]:
            return
        planned_at, planned_stop, planned_target = self.exits_basis
        moved = execution.price - planned_at
        self.log.info(f"position {self.label} entry filled at {execution.price}, {abs(moved)} "
                      f"{'above' if moved > 0 else 'below'} the {planned_at} it was sized at: stop {exits[0]} and "
                      f"target {exits[1]} (planned {planned_stop} and {planned_target}) keep their distances, so the "
                      "loss at the stop stays the budget")

    def _entry_fill_writes(self, execution: m.Execution) -> tuple[Position, m.EntryFillPlan]:
        """The position after an entry execution, and the writes for it: the positions row (opened on the first
        fill) and the rows of one OCO for its unprotected shares."""
        after = self._after_entry_fill(execution)
        # This fill's own shares from its own price; with pieces that waited for an OCO in flight, from theirs too.
        stop, target = self._exits_at(lots_average([*self._unprotected_pieces, (execution.qty, execution.price)]))
        missing = self._unprotected_of(after.quantity) if after.status is PositionStatus.OPEN else Decimal(0)
        holding = (self.flattening or self._protect_after_entry or self._asking_broker
                   or (after.quantity < self.plan.qty and self._waits_for_protection_in_flight()))
        orders = self._protection_orders(missing, stop, target) if missing > 0 and not holding else []
        if self.position_id is None:
            # Its replacements' rows are linked too (a limit entry moved by hand); none usually: the call as ever.
            more = {"replacements": tuple(self.entries[1:])} if len(self.entries) > 1 else {}
            return after, m.EntryFillPlan(calls=(call(
                "open_position_with_orders", entry_order_id=self.entry_order_id, quantity=after.quantity,
                entry_price=after.avg_entry_price, entry_time=execution.at, stop_loss=stop,
                take_profit=target, orders=orders, **more,
            ),), protection_at=0 if orders else None)
        calls = [call("update_position", self.position_id, quantity=after.quantity,
                      entry_price=after.avg_entry_price, realized_pnl=after.realized_pnl)]
        if orders:
            calls.append(call("create_orders", orders))
        return after, m.EntryFillPlan(calls=tuple(calls), protection_at=1 if orders else None)

    def _after_entry_status(self, msg: m.OrderUpdated) -> None:
        if self.position.status is not PositionStatus.PENDING:
            return
        if msg.status is OrderStatus.REJECTED:
            self.position = self.position.fail()
            self.log.warning(f"position {self.label} pending → failed: entry rejected ({msg.reason})")
        elif (msg.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REPLACED)
              and msg.order_id == self.working_entry_id and self._entry_filled() == 0):
            # Only an entry that never filled cancels the position: a cancel event can overtake a fill event,
            # and the cumulative filled_qty on the order is the truth either way. Replaced and told so (not told
            # m.OrderReplaced): the router could not follow the new order, which is the doctor's, as one placed by hand.
            self.position = self.position.cancel()
            self.log.info(f"position {self.label} pending → cancelled: entry {msg.status} unfilled"
                          + (", by an order not followed (the doctor's pass looks at it)"
                             if msg.status is OrderStatus.REPLACED else ""))

    def _entry_replaced(self, msg: m.OrderReplaced, filled: Decimal) -> None:
        """Its entry replaced at the broker (a limit moved in the dashboard, say): the new order is its entry now, and
        its fills are this position's, protected as every entry fill is. Not followed, they were an order placed by
        hand's: bare until the doctor's pass. The plan's shares become those filled plus the new order's."""
        if msg.new_order_id not in self.entries:
            self.entries.append(msg.new_order_id)
        self.system.tell(m.PositionEntry(entry_order_id=msg.new_order_id, owner=self.actor_ref))
        self.plan = self.plan.model_copy(update={"qty": self._entry_filled() + msg.qty})
        self.log.warning(f"position {self.label} its entry o-{msg.replaced_order_id} was replaced at the broker by "
                         f"o-{msg.new_order_id} ({msg.detail}; {filled} filled before): following it, its fills are "
                         "this position's")
        if self.position.is_terminal or self.flattening or msg.replaced_order_id in self._cancels_asked \
                or self._entry_withdrawn is not None or self._protect_after_entry:
            why = (f"its position is {self.position.status}" if self.position.is_terminal
                   else f"flatten: {self.flatten_reason}" if self.flattening
                   else self._entry_withdrawn or "it replaced an entry being cancelled")
            self.log.info(f"position {self.label} cancelling its entry o-{msg.new_order_id}: {why}")
            self._cancel((msg.new_order_id,), reason=why)

    @property
    def working_entry_id(self) -> int | None:
        """The entry order working for this position now: its first, or the last that replaced it at the broker."""
        return self.entries[-1] if self.entries else self.entry_order_id

    def _entry_filled(self) -> Decimal:
        return sum((self.orders[i].filled_qty for i in self.entries if i in self.orders), Decimal(0))

    # --- protection -------------------------------------------------------------------------------------------

    def protected_qty(self, acknowledged: bool = False) -> Decimal:
        """Shares under working OCOs; `acknowledged`: only those the broker has answered (not an OCO created and on
        its way, which a broker outage may never deliver)."""
        total = Decimal(0)
        for pair in self.pairs:
            stop, target = self.orders.get(pair.stop_loss), self.orders.get(pair.take_profit)
            if stop and target and stop.working and target.working and (
                    not acknowledged or stop.acknowledged or target.acknowledged):
                total += pair.qty - stop.filled_qty - target.filled_qty
        return total

    def _unprotected_qty(self, capped: bool = True) -> Decimal:
        if self.position.status is not PositionStatus.OPEN:
            return Decimal(0)
        return self._unprotected_of(self.position.quantity, capped=capped)

    def _unprotected_of(self, quantity: Decimal, capped: bool = False) -> Decimal:
        """Shares of `quantity` with no working stop that may be protected now. Shares an exit order has filled at
        the broker are leaving even before their execution reaches us: a submit reply saying "filled" (a take-profit
        marketable when sent) overtakes the fill's execution, and protecting those shares again would sell them
        twice. Shares a lone OCO leg holds wait for it (_lone_legs). `capped`: the position as it stands, never more
        than the broker said it holds of it after protection was refused for want of shares (_protect_cap); a
        quantity after an execution is not capped, as that execution ends the cap (_apply_execution)."""
        present = quantity - self._leaving()
        if capped and self._protect_cap is not None:
            present = min(present, self._protect_cap)
        return present - self.protected_qty() - self._held_by_lone_legs()

    def _arriving(self) -> Decimal:
        """Entry shares the broker reports filled whose executions have not reached the position yet: a fill event
        lost, the order's status read by REST (a cancel answered "already filled"). The router's catch-up brings
        them."""
        return sum((max(entry.filled_qty - entry.applied_qty, Decimal(0)) for i in self.entries
                    if (entry := self.orders.get(i)) is not None), Decimal(0))

    def _leaving(self) -> Decimal:
        """Shares our exit orders have filled at the broker whose executions have not reached the position yet."""
        return sum((v.filled_qty - v.applied_qty for v in self.orders.values()
                    if v.role != "entry" and v.filled_qty > v.applied_qty), Decimal(0))

    def _protection_orders(self, qty: Decimal, stop: Decimal, target: Decimal) -> list[NewOrderRow]:
        common = dict(cycle_id=self.plan.cycle_id, symbol=self.plan.symbol, side=str(self.position.exit_side),
                      quantity=qty, position_id=self.position_id, parent_order_id=self.entry_order_id,
                      order_class="oco", time_in_force="gtc")
        # Good till cancelled: a day OCO expires at the close, and a daemon down across it (a crash, a machine off)
        # left the shares with no stop at the next open until it started again. The position's own flatten or
        # close cancels them; a day's entries and market exits stay `day`.
        return [  # take-profit first: readers pair the rows by id (catalyst.domain.orders.oco_stop_leg_id)
            NewOrderRow(role="take_profit", order_type="limit", limit_price=target, **common),
            NewOrderRow(role="stop_loss", order_type="stop", stop_price=stop, **common),
        ]

    def _on_wash_trade_refusal(self, msg: m.OrderUpdated) -> bool:
        """Alpaca refuses an order while one of the other side works in the symbol ("potential wash trade
        detected"): our own entry, still filling, or one that ended a moment before the refusal was handled. A
        market exit would be refused alike while the entry works: its rest is cancelled instead, and its shares
        are protected once it has ended. False: not ours to handle (a second refusal after the entry ended, an
        order of someone else's): the usual way, a market exit."""
        _, key = self._pair_of(msg.order_id)
        if key in self._wash_refused:
            self._protect()  # its other leg, refused with it: the pair has ended (until now one leg "worked")
            return True
        if self._entry_working():
            self._wash_refused.add(key)
            if not self._protect_after_entry:
                self._protect_after_entry = True
                self.log.warning(f"position {self.label} protection refused as a potential wash trade while its "
                                 f"entry works ({msg.reason}): cancelling the entry's rest, then protecting its "
                                 f"{self.position.quantity} shares")
                self._ask_entry_cancel()
            return True
        if self._reprotected_after_wash:
            return False
        self._wash_refused.add(key)
        self._reprotected_after_wash = True
        self.log.warning(f"position {self.label} protection refused as a potential wash trade, but the entry has "
                         f"ended since ({msg.reason}): protecting its {self.position.quantity} shares again, once")
        self._protect()
        return True

    def _pair_of(self, order_id: int) -> tuple[OcoPair | None, int]:
        """The OCO pair `order_id` is a leg of, and the key its refusals are counted by (its take-profit's id, or the
        order's own when it is in no pair): both legs of one OCO are refused together, and said once."""
        pair = next((p for p in self.pairs if order_id in (p.take_profit, p.stop_loss)), None)
        return pair, pair.take_profit if pair is not None else order_id

    def _protection_refused_no_shares(self, msg: m.OrderUpdated) -> None:
        """The broker has none of these shares free. Either its order entry has not caught up with the fill yet
        (Alpaca's can lag it by seconds: the OCO is tried again, NO_SHARES_RETRY_S), or they are sold already (an
        exit's fills not recorded yet, e.g. their stream events lost before a restart) or held by orders still
        working. Never a market exit instead: it would be refused for the same reason or, the shares gone, sell short
        (seen in chaos, seed 153: a restart before a stop's last executions were recorded, the account ended 2,008
        short). The router's catch-up and the doctor bring the record level with the broker."""
        pair, key = self._pair_of(msg.order_id)
        if pair is not None and pair.qty > self.position.quantity and not self._asking_broker:
            # Sized before an exit's fill made the position smaller (hand sales the doctor writes as its exits are
            # applied one at a time): refused for shares no longer its own, which says nothing of those it holds now.
            # Given up on, its shares stayed bare (a review: two hand sales, the OCO for the 80 between them refused).
            self._refused_no_shares.add(key)
            if self._no_shares_timer is None:
                self.log.info(f"position {self.label} protection for {pair.qty} refused for want of free shares "
                              f"({msg.reason}); {self.position.quantity} held now: protected again in "
                              f"{NO_SHARES_RETRY_S[0]:g} s")
                self._no_shares_timer = tell_later(self.actor_ref, NO_SHARES_RETRY_S[0], RetryRefusedForShares())
            return
        if key in self._refused_no_shares:
            if self._capped_at_refusal == key:  # its other leg: the pair has ended, the capped OCO goes now
                self._capped_at_refusal = None
                self._protect(coalesce=False)
            return  # its other leg, refused with it
        self._refused_no_shares.add(key)
        now = time.monotonic()
        if self._no_shares_since is None:
            self._no_shares_since = now
        shares = pair.qty if pair is not None else self.position.quantity
        said = (f"position {self.label} protection refused: the broker has too few of its {shares} shares free "
                f"({msg.reason}); not selling at market, which could sell short")
        if self._asking_broker:
            # Rebuilt for late entry shares, the broker being asked what it holds: its answer decides (a sale, or
            # stops overnight), and a try now would wait on it anyway (a review: a try here took that read's timer).
            self.log.warning(f"{said}: the broker's answer about its late shares decides")
            return
        if self._no_shares_timer is not None:
            self.log.info(f"{said}: a try is already due")  # pieces' OCOs refused before it (a review)
            return
        if self._cap_at_refusal(msg, key, shares):
            return
        waited_s = now - max(self._no_shares_since, self._entry_filled_at)
        if waited_s >= NO_SHARES_WINDOW_S:
            asked = self._doctor_pass_wanted(f"{self.label} protection refused for want of free shares")
            reading = not self._held_read_asked  # a capped OCO refused in turn (a second hand sale): asked again
            self.log.error(f"{said}; still refused {now - self._no_shares_since:.0f} s after the first refusal, so "
                           "not a lag of the broker's: without a stop until the fills the broker has and we lack are "
                           "recorded (the router's catch-up, the doctor's pass" + (", asked for now" if asked else "")
                           + ")" + ("; asking the broker what it holds, to protect those" if reading else "")
                           + f"; check {self.plan.symbol} at the broker")
            if reading:
                self._held_read_asked = True  # once until protection is taken again: a read a refusal answers loops
                self._read_held_for_protection()
            return
        self._no_shares_tries += 1
        wait_s = NO_SHARES_RETRY_S[min(self._no_shares_tries, len(NO_SHARES_RETRY_S)) - 1]
        self.log.warning(f"{said}: its order entry can lag a fill, trying the OCO again in {wait_s:g} s "
                         f"(try {self._no_shares_tries}, for up to {NO_SHARES_WINDOW_S:g} s)")
        self._no_shares_timer = tell_later(self.actor_ref, wait_s, RetryRefusedForShares())

    def _cap_at_refusal(self, msg: m.OrderUpdated, key: int, shares: Decimal) -> bool:
        """A refusal for want of shares that sales outside Catalyst explain (heard on the stream or listed by a
        catch-up; the refusal names the shares free, and those sales cover the rest), or orders Catalyst did not place
        still working on the exit side (a trader's limit sell holding some), with such sales or alone: the shares free
        are protected now, capped as a read of the broker would (_on_protection_read). Without this they waited the
        NO_SHARES_WINDOW_S kept for order entry's lag, then a read of a positions list that can lag the sale by as long
        again. Where neither explains it (order entry behind our own fill, an order the router has not heard of), the
        window and the read decide as before."""
        available = shares_available_in(msg.reason)
        sold = sum(self._sold_outside.values(), Decimal(0))
        sold_explains = available is not None and sold > 0 and shares - available <= sold
        # The OCO tried because an order Catalyst did not place ended: refused, what it names free is what that order
        # let go of, other such orders holding the rest (one of two hand limits cancelled, a hand order replaced by
        # the trader). Not order entry's lag, unless a fill of this position's came within its window. Before, 15 s
        # of tries said as that lag, then an ERROR that the shares had no stop, the shares let go of bare meanwhile.
        lag_over = time.monotonic() - self._entry_filled_at >= NO_SHARES_WINDOW_S
        after_end = key in self._tried_after_outside_end and lag_over
        self._tried_after_outside_end.discard(key)
        # Orders Catalyst did not place working on the exit side hold the shares missing (with those sold outside):
        # not order entry's lag either, unless a fill of this position's came within its window. Before, the window's
        # tries and a read, the shares free bare meanwhile, and again at each restart for as long as the order worked.
        holding = self._held_by_outside_orders()
        held = sum((qty for _, qty in holding), Decimal(0))
        held_explains = available is not None and held > 0 and lag_over and shares - available <= sold + held
        if available is None or not (sold_explains or after_end or held_explains):
            return False
        recorded = self.position.quantity - self._leaving()
        limit = recorded if self._protect_cap is None else min(recorded, self._protect_cap)
        present = min(limit, max(available, Decimal(0)) + self.protected_qty())
        if present <= 0 or present >= limit:
            return False
        self._protect_cap = present
        # A short's exit side buys: a hand cover was bought, not sold (a review: said as sold).
        moved = "sold" if str(self.position.exit_side) == "sell" else "bought"
        asked = self._doctor_pass_wanted(f"{self.label} shares {moved} outside Catalyst" if sold_explains
                                         else f"{self.label} shares held by orders Catalyst did not place")
        asked_said = " (asked for now)" if asked else ""
        # After a restart (the cap is not kept) a working OCO may cover them already.
        covered = "protected now" if present > self.protected_qty() else "under its working stop already"
        if sold_explains:
            self.log.warning(f"position {self.label} protection for {shares} refused: the broker has {available} free "
                             f"({msg.reason}), {sold} {self.plan.symbol} having been {moved} outside Catalyst since "
                             f"this position's last entry fill: {present} {covered}; the other {recorded - present} "
                             f"left to the doctor's pass, which writes such a "
                             f"{'sale' if moved == 'sold' else 'purchase'} as this position's exit{asked_said}")
        elif after_end:
            self.log.warning(f"position {self.label} protection for {shares} refused after an order Catalyst did not "
                             f"place ended: the broker has {available} free ({msg.reason}): {present} {covered}; the "
                             f"other {recorded - present}, held by other orders Catalyst did not place, or {moved} "
                             f"outside it?, left to the doctor's pass{asked_said}")
        else:
            orders = ", ".join(f"{broker_id[:8]} {qty}" for broker_id, qty in holding)
            also = f", and {sold} {moved} outside Catalyst since this position's last entry fill" if sold > 0 else ""
            self.log.warning(f"position {self.label} protection for {shares} refused: the broker has {available} free "
                             f"({msg.reason}), {held} {self.plan.symbol} being held by working orders Catalyst did "
                             f"not place ({orders}){also}: {present} {covered}; the other {recorded - present} left "
                             f"to the doctor's pass{asked_said}")
        pair, _ = self._pair_of(msg.order_id)
        if pair is not None and any((v := self.orders.get(leg)) is not None and v.working
                                    for leg in (pair.take_profit, pair.stop_loss)):
            self._capped_at_refusal = key  # its other leg still reads as working: it would count as a lone leg
        else:
            self._protect(coalesce=False)
        return True

    def _held_by_outside_orders(self) -> list[tuple[str, Decimal]]:
        """The orders Catalyst did not place working on this position's exit side, as the router last told them:
        (broker id, shares still to fill)."""
        side = str(self.position.exit_side)
        return [(broker_id, qty) for broker_id, (their_side, qty) in self._working_outside.items()
                if their_side == side]

    def _on_order_outside_ended(self, msg: m.OrderOutsideEnded) -> None:
        """An order Catalyst did not place ended in this position's symbol on its exit side (the trader cancelled a
        hand limit sell): shares it held may be free. Protection capped or given up on beside it is tried again as
        recorded; a refusal of that OCO then caps it anew at once at the shares it names free (_cap_at_refusal).
        Before, the cap stayed until the doctor's next pass."""
        if (msg.side != self.position.exit_side or self.position.status is not PositionStatus.OPEN
                or self.flattening or self._no_shares_timer is not None):
            return
        if self._protect_cap is None and not self._held_read_asked:
            return  # nothing held back: its protection was never cut short by shares held elsewhere
        if self._unprotected_qty(capped=False) <= 0:
            return
        self.log.info(f"position {self.label} an order Catalyst has no row of ({msg.broker_id[:8]}) ended {msg.event} "
                      f"at the broker: shares it held may be free, protecting every recorded share again")
        self._protect_cap = None
        self._no_shares_since, self._held_read_asked, self._held_reads = None, False, 0
        sent = len(self.pairs)
        self._protect(coalesce=False)
        self._tried_after_outside_end = {pair.take_profit for pair in self.pairs[sent:]}

    def _protection_refused_overnight(self, msg: m.OrderUpdated) -> None:
        """Protection refused while the market is closed. The day's answer, a market exit, would wait for the next
        open with no stop either (a review: it took the refusal as a stop already through the market). The OCO is
        asked for again after growing waits, not at once (a lasting refusal would loop as fast as the broker
        answers); the next open's flatten sells the shares."""
        pair, key = self._pair_of(msg.order_id)
        if key in self._refused_overnight:
            return  # its other leg, refused with it
        self._refused_overnight.add(key)
        if self._selling_late_shares:
            # Late entry shares whose stop is refused (their trade stopped out: the last price is through it): bare
            # either way until the open. A market sell queued for the open settles them there whatever becomes of
            # this actor (a restart finds it working), where retried stops left them to an actor (a review).
            self.log.error(f"position {self.label} protection for its late entry shares refused while the market is "
                           f"closed ({msg.reason or 'no reason given'}): {self.position.quantity} shares without a "
                           "stop until the open; a market sell of them queued for the open instead")
            self._flatten("late entry shares, their stops refused while the market is closed", scheduled=True)
            self._sale_stands_overnight = True
            return
        self._protection_rejections += 1
        tries = self._protection_rejections
        longest = PROTECT_RETRY_OVERNIGHT_MAX_S
        wait_s = protect_retry_wait_s(tries, longest)
        said = (tries == 1 or protect_retry_wait_s(tries - 1, longest) < longest
                or tries % PROTECT_RETRY_OVERNIGHT_SAID_EVERY == 0)
        self.log.log("CRITICAL" if said else "DEBUG",
                     f"position {self.label} protection refused while the market is closed "
                     f"({msg.reason or 'no reason given'}{f', {tries} times in a row' if tries > 1 else ''}): "
                     f"{pair.qty if pair else self.position.quantity} shares without a stop; no market exit, which "
                     f"would wait for the open; asking again in {wait_s:g} s; protect them by hand at the broker if "
                     "this lasts")
        self._protection_held = True
        if self._retry_timer:
            self._retry_timer.cancel()
        self._retry_timer = tell_later(self.actor_ref, wait_s, RetryProtection())

    def _withdraw_entry(self, reason: str) -> None:
        """The daemon stopping: the entry's rest cancelled, so nothing fills while no one is here to protect it (a
        review: a TERM while a limit entry had filled 283 of 1,789 left the other 1,506, filled a moment later, with
        no stop until a restart). Pieces filling meanwhile are protected as ever; a pending position whose entry ends
        unfilled is cancelled."""
        if self.position.is_terminal:
            return
        if self.entry_order_id is None:
            # Its entry's row is still being made (the router busy): cancelled as soon as it is named (a review: the
            # request was dropped here, and the entry, created a moment later, went to the broker after the stop).
            self._entry_withdrawn = reason
            self.log.info(f"position {self.label} {reason}: its entry, not yet named, is cancelled once it is")
            return
        if not self._entry_working():
            if self.working_entry_id in self._awaited_replacements:
                # Replaced before a restart by an order not followed yet: cancelled once it is (_entry_replaced).
                self._entry_withdrawn = reason
                self.log.info(f"position {self.label} {reason}: its entry o-{self.working_entry_id} was replaced by an "
                              "order not followed yet, cancelled once it is")
            return
        self.log.info(f"position {self.label} {reason}: cancelling the rest of its entry o-{self.working_entry_id} "
                      f"({self._entry_filled()} of {self.plan.qty} filled, {self.protected_qty()} under stops)")
        self._entry_withdrawn = reason
        self._ask_entry_cancel()

    def _ask_entry_cancel(self) -> None:
        """Asked again every few seconds until the entry has ended: a cancel lost to a 5xx or a timeout is not
        retried by the router, and the shares wait for it without a stop."""
        assert self.working_entry_id is not None
        stopping = self._entry_withdrawn is not None  # on the wash-trade path too (a review: every 2 s, with a read)
        self._cancel((self.working_entry_id,), reason="its protection was refused as a potential wash trade"
                     if self._protect_after_entry else self._entry_withdrawn)
        if self._entry_cancel_timer:
            self._entry_cancel_timer.cancel()
        # While stopping, asked again every second within the stop's wait: a cancel refused (a 503) is sent again,
        # one still unanswered is not (the router's _cancelling), so none queues behind one a broker outage hangs.
        self._entry_cancel_timer = tell_later(self.actor_ref, STOP_CANCEL_RECHECK_S if stopping else FLATTEN_RECHECK_S,
                                              CheckEntryCancel())

    def _check_entry_cancel(self) -> None:
        if (not (self._protect_after_entry or self._entry_withdrawn) or not self._entry_working()
                or self.position.is_terminal):
            return
        if self._entry_withdrawn is not None:
            self._ask_entry_cancel()  # the daemon stopping: no read queued behind a broker that may hang
            return
        self.log.warning(f"position {self.label} entry o-{self.working_entry_id} still works after its cancel was "
                         f"asked ({self.position.quantity} shares wait for their stop): asking the broker again")
        self.router.tell(m.VerifyOrders(order_ids=(self.working_entry_id,)))
        self._ask_entry_cancel()

    def _entry_working(self) -> bool:
        entry = self.orders.get(self.working_entry_id) if self.working_entry_id is not None else None
        return entry is not None and entry.working

    def _protect(self, coalesce: bool = True, write_timeout_s: float | None = None) -> None:
        if self.flattening or self.position.status is not PositionStatus.OPEN or self._asking_broker:
            return
        if self._protection_held:
            if self._market_is_closed():
                return  # refused while closed: asked again at RetryProtection
            self._protection_held = False  # the market has opened: a stop now may be taken (a review: held 10 min)
        if self._protect_after_entry and self._entry_working():
            return
        if self._awaiting_replacements():
            return
        if self._lone_legs():
            self._expect_lone_legs_to_end()
        missing = self._unprotected_qty()
        if missing > 0 and coalesce and self._waits_for_protection_in_flight():
            self._arm_coalesce_timer()  # its answer (or the timer) protects them, with the pieces that follow
        elif missing > 0:
            # Pieces that waited for an OCO in flight: from their own prices. Otherwise the whole position's missing
            # shares (a stop cancelled by hand, a refused OCO): from its average price (pieces bought higher move it
            # up).
            pieces = self._unprotected_pieces
            price = (lots_average(pieces) if sum((q for q, _ in pieces), Decimal(0)) == missing
                     else self.position.avg_entry_price)
            self._unprotected_pieces = []
            exits = self._exits_at(price)
            self._submit_protection(self.writer.create_orders(self._protection_orders(missing, *exits))
                                    .get(timeout=write_timeout_s))

    def _awaiting_replacements(self) -> bool:
        """Legs restored `replaced` whose replacement the router has not answered about yet (REPLACEMENT_ASK_S). An
        entry awaited holds nothing back: the shares recorded are protected or sold as ever, and the new entry's fills,
        once followed, are this position's (or, closed by then, its late entry shares)."""
        return any(order_id not in self.entries for order_id in self._awaited_replacements)

    def _ask_about_replacements(self) -> None:
        self._replacement_timer = None
        if not self._awaited_replacements or self.position.is_terminal:
            self._awaited_replacements.clear()
            return
        legs = tuple(sorted(self._awaited_replacements))
        self._replacement_asks += 1
        wait_s = replacement_ask_wait_s(self._replacement_asks)
        if self._replacement_asks % REPLACEMENT_ASKS_SAID_EVERY == 0:
            self.log.warning(f"position {self.label} still no word from the broker on {', '.join(f'o-{i}' for i in legs)}"
                             f", replaced before a restart ({self._replacement_asks} asks; the next in {wait_s:g} s): "
                             "nothing sent for those shares until it comes")
        self.router.tell(m.VerifyOrders(order_ids=legs))
        self._replacement_timer = tell_later(self.actor_ref, wait_s, AskAboutReplacements())

    def _waits_for_protection_in_flight(self) -> bool:
        """The entry still works and an OCO of this position is on its way to the broker, sent less than
        PROTECTION_COALESCE_S ago: new shares wait for its answer, then go in one OCO."""
        if not self._entry_working():
            return False
        now = time.monotonic()
        return any(now - sent_at < PROTECTION_COALESCE_S for sent_at in self._in_flight_sent_at())

    def _in_flight_sent_at(self) -> list[float]:
        """When each OCO still on its way (rows counted, no broker answer yet) was counted (time.monotonic())."""
        return [sent_at for take_profit, sent_at in self._sent_at.items()
                if (view := self.orders.get(take_profit)) is not None and view.status is OrderStatus.CREATED]

    def _arm_coalesce_timer(self) -> None:
        """CoalesceEnded once the youngest OCO on its way has waited PROTECTION_COALESCE_S: the wait ends then,
        however many pieces came meanwhile (re-armed 1 s after each, the first piece waited close to 2 s)."""
        if self._coalesce_timer:
            self._coalesce_timer.cancel()
        youngest = max(self._in_flight_sent_at(), default=time.monotonic())
        wait_s = max(youngest + PROTECTION_COALESCE_S - time.monotonic(), 0.0) + 0.01
        self._coalesce_timer = tell_later(self.actor_ref, wait_s, CoalesceEnded())

    def _lone_legs(self) -> tuple[int, ...]:
        """Working legs of OCO pairs whose other leg has ended.

        At the broker that nearly always means the lone leg is filling (an OCO cancels one leg when the other
        executes) and its fill event is a moment behind the cancel's. Its shares are neither protected nor free: a
        new OCO for them would sell them twice (Alpaca refuses it while the lone leg holds them, and a refused
        protection flattens the position: a market sell of shares already sold). So they wait for the lone leg; one
        still working after LONE_LEG_GRACE_S is cancelled (_check_lone_legs) and its shares protected anew."""
        lone = (pair.take_profit if take_profit.working else pair.stop_loss for pair, take_profit, _ in self._broken_pairs())
        return tuple(leg for leg in lone if leg not in self._kept_lone_stops)

    def _triggered_stops(self, lone: tuple[int, ...]) -> tuple[int, ...]:
        """The lone legs that are stops whose take-profit ended `replaced`: triggered, by Alpaca's account of it."""
        return tuple(pair.stop_loss for pair, take_profit, _ in self._broken_pairs()
                     if pair.stop_loss in lone and take_profit.status is OrderStatus.REPLACED)

    def _held_by_lone_legs(self) -> Decimal:
        return sum((max(pair.qty - take_profit.filled_qty - stop_loss.filled_qty, Decimal(0))
                    for pair, take_profit, stop_loss in self._broken_pairs()), Decimal(0))

    def _broken_pairs(self) -> list[tuple[OcoPair, OrderView, OrderView]]:
        """OCO pairs with one leg ended and the other still working, with their (take-profit, stop-loss) views."""
        broken = []
        for pair in self.pairs:
            take_profit, stop_loss = self.orders.get(pair.take_profit), self.orders.get(pair.stop_loss)
            if take_profit is not None and stop_loss is not None and take_profit.working != stop_loss.working:
                broken.append((pair, take_profit, stop_loss))
        return broken

    def _expect_lone_legs_to_end(self) -> None:
        if self._lone_timer is not None:
            return
        lone = ", ".join(f"o-{i}" for i in self._lone_legs())
        self.log.info(f"position {self.label} an OCO leg ended while {lone} still works: waiting for it (its fill, "
                      f"usually) before protecting those shares again")
        self._lone_timer = tell_later(self.actor_ref, LONE_LEG_GRACE_S, CheckLoneLegs())

    def _check_lone_legs(self) -> None:
        self._lone_timer = None
        lone = self._lone_legs()
        if not lone or self.position.status is not PositionStatus.OPEN or self.flattening:
            return
        triggered = self._triggered_stops(lone)
        wait_s = self._look_at_triggered_stops(triggered) if triggered else None
        lone = tuple(i for i in lone if i not in triggered)
        if lone:
            named = ", ".join(f"o-{i}" for i in lone)
            self.log.warning(f"position {self.label} OCO leg {named} still works alone after {LONE_LEG_GRACE_S:g}s: "
                             "asking the broker and cancelling it; its shares are protected anew once it has ended")
            self.router.tell(m.VerifyOrders(order_ids=lone))
            self._cancel(lone, reason="its OCO sibling ended: protection renewed")
            wait_s = min(LONE_LEG_GRACE_S, wait_s) if wait_s is not None else LONE_LEG_GRACE_S
        if wait_s is not None:
            self._lone_timer = tell_later(self.actor_ref, wait_s, CheckLoneLegs())

    def _look_at_triggered_stops(self, stops: tuple[int, ...]) -> float | None:
        """Stops executing by the broker's account (TRIGGERED_STOP_LOOKS_S): asked about, each at its own pace, not
        cancelled. The wait before the next look due, or None once every one is kept alone."""
        now, asked, waits = time.monotonic(), [], []
        for stop in stops:
            looks, due = self._triggered_stop_looks.get(stop, (0, now))
            if now < due - 0.05:  # woken for another lone leg: this one's look is not due yet
                waits.append(due - now)
                continue
            looks += 1
            if looks > len(TRIGGERED_STOP_LOOKS_S):
                self._kept_lone_stops.add(stop)
                waited_s = LONE_LEG_GRACE_S + sum(TRIGGERED_STOP_LOOKS_S)
                self.log.warning(f"position {self.label} stop o-{stop} still works {waited_s:g} s after its "
                                 "take-profit was replaced at the broker: kept alone, its shares stay under it with "
                                 "no take-profit")
                continue
            if looks == 1:
                self.log.warning(f"position {self.label} stop o-{stop} still works {LONE_LEG_GRACE_S:g} s after its "
                                 "take-profit was replaced at the broker, as Alpaca reports a triggered stop: kept, "
                                 "not cancelled (it is the exit in flight); asking the broker about it")
            asked.append(stop)
            self._triggered_stop_looks[stop] = (looks, now + TRIGGERED_STOP_LOOKS_S[looks - 1])
            waits.append(TRIGGERED_STOP_LOOKS_S[looks - 1])
        if asked:
            self.router.tell(m.VerifyOrders(order_ids=tuple(asked)))
        return min(waits, default=None)

    def _say_if_cancelled_elsewhere(self, order_id: int) -> None:
        """An OCO whose legs, both seen working at the broker, both ended cancelled, neither filled nor asked by this
        actor, was cancelled at the broker by someone else (by hand in Alpaca's dashboard, another program on the key),
        or asked before a restart. It is protected again at once, as any shares without a stop are; said as a WARNING,
        once per pair, so whoever took the stop off learns why it is back."""
        for pair in self.pairs:
            if order_id not in (pair.take_profit, pair.stop_loss) or pair.take_profit in self._cancelled_elsewhere:
                continue
            legs = (self.orders.get(pair.take_profit), self.orders.get(pair.stop_loss))
            if any(leg is None or leg.status is not OrderStatus.CANCELLED or leg.filled_qty > 0 or not leg.acknowledged
                   for leg in legs) or {pair.take_profit, pair.stop_loss} & self._cancels_asked:
                continue
            self._cancelled_elsewhere.add(pair.take_profit)
            self.log.warning(f"position {self.label} its stop o-{pair.stop_loss} and take-profit o-{pair.take_profit} "
                             f"were cancelled at the broker, not by Catalyst (by hand, or before a restart): "
                             f"protecting the shares again; to manage a position by hand, stop Catalyst first")

    def _cancel(self, order_ids: tuple[int, ...], reason: str, quiet: bool = False) -> None:
        self._cancels_asked.update(order_ids)
        self.router.tell(m.CancelOrders(order_ids=order_ids, reason=reason, quiet=quiet))

    def _submit_protection(self, rows: list[Any]) -> None:
        """Rows committed: count them as protection at once (so no second OCO is asked for the same shares) and
        hand them to the router for the broker."""
        take_profit, stop_loss = self._count_protection(rows)
        self.router.tell(m.SubmitProtection(owner=self.actor_ref, take_profit=take_profit, stop_loss=stop_loss))

    def _count_protection(self, rows: list[Any]) -> tuple[Any, Any]:
        take_profit, stop_loss = rows
        self.orders[take_profit.order_id] = OrderView(role="take_profit")
        self.orders[stop_loss.order_id] = OrderView(role="stop_loss")
        self.pairs.append(OcoPair(take_profit.order_id, stop_loss.order_id, take_profit.quantity))
        self._sent_at[take_profit.order_id] = time.monotonic()
        return take_profit, stop_loss

    def _flatten(self, reason: str, scheduled: bool = False) -> None:
        if self.flattening or self.position.is_terminal:
            return
        if self._asking_broker:
            # Rebuilt for late entry shares and asking the broker whether it holds them: their market exit goes
            # once it says so, and none if it does not (sold by hand). An exit now could sell what is not there.
            self.log.info(f"position {self.label} {reason}: its late entry shares are sold once the broker says it "
                          "holds them")
            return
        working = tuple(i for i, v in self.orders.items() if v.working)
        if self.position.status is PositionStatus.PENDING:
            # The entry is cancelled; if it fills all the same (the cancel came too late), the shares are protected,
            # then sold at once: a flatten asked of a pending position still means flat.
            if self._flatten_when_open is None:
                self.log.info(f"position {self.label} pending: {reason}; cancelling its entry (shares that fill "
                              f"anyway are flattened)")
            self._flatten_when_open = reason
            self._cancel(working, reason=reason)
            self._flatten_asks = 0
            self._start_flatten_timer()  # a cancel an outage refused is asked again (_check_flatten)
            return
        if not scheduled and self._market_is_closed():
            # Asked while the market is closed (the doctor's flatten policy, an emergency stop's last resort): its stops
            # cancelled and its exit queued for the open, the shares would be bare all night. Done once it opens (a
            # review: left to the cycle's flatten of earlier days' positions, one adopted before the open was kept all
            # day), or by the cycle's own flatten first.
            if self._flatten_when_market_opens is None:
                self.log.warning(f"position {self.label} {reason}: the market is closed, and a market exit would wait "
                                 "for the open with no stop under the shares; kept under stops, flattened when it opens")
            self._flatten_when_market_opens = reason
            self._arm_market_timer()
            self._protect()
            return
        self._flatten_when_market_opens = None
        self.flattening, self.flatten_reason, self.flatten_since = True, reason, self.clock.now()
        self._unprotected_pieces = []  # the exit takes them; shares it leaves are protected from the average
        self._kept_overnight = False  # a new flatten (the next open's): its own cancels, its own exit
        self._sale_stands_overnight = False
        self._told_closed = False  # the cycle's flattens come while the market is open (at its end, at the next open)
        self._protection_held = False  # refused overnight: the flatten takes the shares instead
        self._exit_read_asked_at, self._exit_read_held, self._exit_cut = None, None, Decimal(0)
        self._exit_last_held, self._exit_read_not_before, self._outside_wait_began = None, 0.0, None
        self._exit_read_failures = self._exit_lag_reads = self._flatten_asks = 0
        self._exit_none_said = False
        self.log.log("INFO" if scheduled else "WARNING", f"position {self.label} flattening {self.position.quantity}: "
                     f"{reason}; cancelling {len(working)} working orders before the market exit")
        # The market exit waits until every other order of the position has ended. Sent beside the cancels, it
        # can fill in the same moment as a stop that is already through (after a restart, or a fast market): both
        # fill, the exit is doubled and the account ends up short. Cancelled first, a stop that fills instead
        # simply leaves less (or nothing) to exit.
        if working:
            self._cancel(working, reason=f"flatten: {reason}")
            self._start_flatten_timer()
        self._exit_when_clear()

    def _exit_when_clear(self) -> None:
        if self.exit_sent:
            self._go_on_after_a_filled_exit()
        if not self.flattening or self.exit_sent or self.position.status is not PositionStatus.OPEN:
            return
        if any(v.working for v in self.orders.values()):
            return
        if self._awaiting_replacements():
            self._start_flatten_timer()
            return
        arriving = self._arriving()
        if arriving == 0:
            self._entry_fills_waited_since, self._gave_up_on_entry_fills = None, False  # a later flatten waits afresh
        elif not self._done_waiting_for_entry_fills(arriving):
            # Those shares are at the broker, not in the position yet: an exit of what is recorded would leave them
            # behind, bare (the position closed, its actor gone when their execution comes). One exit for all.
            if self._waiting_for_entry_fills != arriving:
                self._waiting_for_entry_fills = arriving
                self.log.warning(f"position {self.label} every other order has ended, but its entry filled {arriving} "
                                 f"more at the broker than its executions say: market exit once they are recorded "
                                 f"(the router's catch-up brings them)")
            self._start_flatten_timer()  # asks the broker again if they are slow to come
            return
        # An exit that filled at the broker (its fill event lost, its status read by REST: "not cancelable, filled")
        # has sold those shares already; its execution comes later (the doctor's pass, a catch-up). A market exit
        # for them too would sell them twice and leave the account short.
        leaving = self._leaving()
        remaining = self.position.quantity - leaving
        if remaining <= 0:
            if not self._waiting_for_exit_fills:
                self._waiting_for_exit_fills = True
                self.log.info(f"position {self.label} every other order has ended and its exits filled {leaving} at "
                              f"the broker: no market exit, waiting for their executions")
            return
        held = self._held_for_exit()
        if held is None:
            return  # the broker is asked what it holds of the shares; the exit goes with its answer (_on_exit_read)
        qty = exit_size(remaining, held)
        if qty <= 0:
            self._start_flatten_timer()  # the shares left changed while the broker was asked: it is asked again
            return
        self._exit_cut = remaining - qty
        self.exit_sent = True
        self.log.info(f"position {self.label} every other order has ended: market exit of {qty}"
                      + (f" ({leaving} already sold by its exits at the broker)" if leaving else ""))
        self._exit_row_pending = True
        self.router.tell(m.PlaceExit(
            owner=self.actor_ref, position_id=self.position_id, cycle_id=self.plan.cycle_id, symbol=self.plan.symbol,
            side=self.position.exit_side, qty=qty, reason=self.flatten_reason,
        ))

    def _held_for_exit(self) -> Decimal | None:
        """What the broker holds of this position's shares, as its last answer said (used once), or None once asked
        (an answer that does not come within EXIT_READ_ANSWER_S is asked for again at a flatten recheck)."""
        held, self._exit_read_held = self._exit_read_held, None
        if held is not None:
            return held
        now = time.monotonic()
        if self._outside_settled_at() > now and self._outside_wait_began is None:
            self._outside_wait_began = now
        not_before = max(self._exit_read_not_before, self._outside_settled_at())
        if now < not_before:
            self._start_flatten_timer(not_before - now)
            return None
        if self._exit_read_asked_at is None or now - self._exit_read_asked_at >= EXIT_READ_ANSWER_S:
            self._exit_read_asked_at = now
            self.router.tell(m.ReadBrokerPosition(symbol=self.plan.symbol, reply_to=self.actor_ref, for_exit=True))
        self._start_flatten_timer()
        return None

    def _on_exit_read(self, msg: m.BrokerPositionRead) -> None:
        """The broker's position, read before a market exit (_held_for_exit). The exit sells the shares recorded, never
        more than the broker holds of them: none held means sold outside Catalyst (the doctor's pass compares the
        broker with the database, and records a hand sale it finds as the position's exit)."""
        asked_at = self._exit_read_asked_at
        if asked_at is None:
            return  # a question that ended (a new flatten asks afresh)
        self._exit_read_asked_at = None
        if not self.flattening or self.exit_sent or self.position.status is not PositionStatus.OPEN:
            return  # the close kept it under stops meanwhile, or it closed
        if self._outside_settled_at() > asked_at:
            # A sale outside Catalyst came while this was asked (or just before): the answer can predate it.
            if self._outside_wait_began is None:
                self._outside_wait_began = asked_at
            self._start_flatten_timer(self._outside_settled_at() - time.monotonic())
            return
        self._outside_first_at = self._outside_wait_began = None  # an answer taken: later fills put the next off afresh
        recorded = self.position.quantity - self._leaving()
        symbol = self.plan.symbol
        if msg.error is not None:
            self._exit_read_failures += 1
            if self._exit_read_failures < EXIT_READ_TRIES:
                self.log.warning(f"position {self.label} could not read the broker's {symbol} position before its "
                                 f"market exit ({msg.error}): asking again in {FLATTEN_RECHECK_S:g} s")
                self._start_flatten_timer()
                return
            tries, self._exit_read_failures = self._exit_read_failures, 0
            if self._exit_last_held is None:
                self.log.warning(f"position {self.label} could not read the broker's {symbol} position {tries} "
                                 f"times ({msg.error}): market exit of the {recorded} shares recorded without it")
                self._exit_read_held = recorded
                self._exit_when_clear()
                self._exit_read_held = None  # not kept for a later exit if this one did not go (a review)
                return
            # A read of this flatten said fewer were held (a review: failures after "holds none" sold the 100 short):
            # never past that answer.
            held, said = self._exit_last_held, (f"could not read it {tries} times ({msg.error}); its last answer, "
                                                f"{max(self._exit_last_held, Decimal(0))} of them, stands")
        else:
            self._exit_read_failures = 0
            others = self._others_at_broker()
            held = held_at_broker(self.position.side, msg.qty, others)
            said = f"it holds {msg.qty} {symbol}" + (f", the other open positions {others}" if others else "")
            last_fill_at = max(self._entry_filled_at, self._restored_at)
            if held < recorded and time.monotonic() - last_fill_at < NO_SHARES_WINDOW_S:
                # Alpaca's positions can lag its orders for seconds after a fill (ALPACA.md §7): shares just bought may
                # not be listed yet. Asked again until the window since the entry's last execution has passed.
                self._exit_lag_reads += 1
                self.log.log("WARNING" if self._exit_lag_reads == 1 else "DEBUG",
                             f"position {self.label} the broker lists {max(held, Decimal(0))} of its {recorded} "
                             f"shares ({said}); its positions can lag a fill: asking again in {FLATTEN_RECHECK_S:g} s "
                             "before the market exit")
                self._start_flatten_timer()
                return  # not the flatten's last word (a review: failures after it called the shares sold outside)
            self._exit_last_held = held
        if held < recorded and self._selling_late_shares:
            # Entry shares recorded after the position closed, which the broker held a moment ago: gone since (sold by
            # hand). Their row is closed, so no doctor's finding would ever settle them here (a review).
            return self._leave_late_shares(f"the broker holds {max(held, Decimal(0))} of them now ({said}; sold by "
                                           "hand?)")
        if held <= 0:
            opens = "short" if self.position.side is PositionSide.LONG else "long"
            if not self._exit_none_said:
                self._doctor_pass_wanted(f"{self.label} flattening, the broker holding none of its shares")
            self.log.log("DEBUG" if self._exit_none_said else "ERROR",
                         f"position {self.label} the broker holds none of its {recorded} shares ({said}): no market "
                         f"exit, which would open a {opens} position; sold outside Catalyst? The doctor's pass "
                         "compares the broker with the database and records such a sale as this position's exit; "
                         f"asking the broker again every {EXIT_NONE_RECHECK_S:g} s")
            self._exit_none_said = True
            self._exit_read_not_before = time.monotonic() + EXIT_NONE_RECHECK_S
            self._start_flatten_timer(EXIT_NONE_RECHECK_S)
            return
        if held < recorded:
            self.log.warning(f"position {self.label} the broker holds only {held} of its {recorded} shares ({said}): "
                             f"a market exit of those {held}; the other {recorded - held} were sold outside Catalyst? "
                             f"asked about again {EXIT_NONE_RECHECK_S:g} s after that exit fills")
        self._exit_read_held = held
        self._exit_when_clear()
        self._exit_read_held = None  # not kept for a later exit if this one did not go (a review)

    def _read_held_for_protection(self, again: bool = False) -> None:
        """`again`: a later read (ReadHeldForProtection), skipped if the shares were protected meanwhile (the doctor's
        heal, an OCO taken) or are being sold. The first is asked as the refused OCO's legs are still being answered,
        when its other leg may not read as refused yet."""
        self._held_read_timer = None
        if again and (self.position.status is not PositionStatus.OPEN or self.flattening
                      or self._unprotected_qty() <= 0):
            return
        self._held_reads += 1
        self.router.tell(m.ReadBrokerPosition(symbol=self.plan.symbol, reply_to=self.actor_ref, for_protection=True))

    def _on_protection_read(self, msg: m.BrokerPositionRead) -> None:
        """The broker's position, read once protection was given up on for want of shares (a partial sale by hand
        takes some; the doctor's pass writes it as this position's exit, if one explains it). Meanwhile the shares it
        still holds free are protected at that number: a halt over a sale no fill explains left them bare until an operator
        came (two open positions of the symbol, a hand round trip earlier the same day). Never more than recorded, and
        never past an execution or a restart: those measure the shares afresh (_apply_execution)."""
        if self.position.status is not PositionStatus.OPEN or self.flattening:
            return
        recorded = self.position.quantity - self._leaving()
        # What the last read found, if one capped it: only fewer than that caps anew (a second hand sale).
        limit = recorded if self._protect_cap is None else min(recorded, self._protect_cap)
        if msg.error is not None:
            self.log.warning(f"position {self.label} could not read the broker's {self.plan.symbol} position to "
                             f"protect what it holds ({msg.error}): its {recorded} shares wait for the doctor's pass")
            return
        others = self._others_at_broker()
        held = held_at_broker(self.position.side, msg.qty, others)
        # Shares an open order holds (a hand limit sell still working, another position's OCO) cannot take a stop:
        # Alpaca's qty_available leaves out every open order's promised shares, this position's own stops included.
        # With it, the other open positions of the symbol are not netted out by what they record: those under their
        # own stops are out of it already, and bare ones (more than one position's shares sold by hand, each
        # position reading none of its own once their records were netted out: a review) are better under this
        # position's stop than under none. Without it (not reported), their recorded shares are netted out.
        if msg.available is None:
            present = held
        else:
            present = min(held_at_broker(self.position.side, msg.qty, Decimal(0)),
                          msg.available + self.protected_qty())
        said = f"it holds {msg.qty} {self.plan.symbol}"
        if msg.available is not None and msg.available < abs(msg.qty):
            said += f", {msg.available} of them not promised to open orders"
        if others:
            said += f", the other open positions {others}"
        if present <= 0:
            self.log.info(f"position {self.label} the broker holds none of its {limit} shares free ({said}): nothing "
                          "to protect; left to the doctor's pass")
            return
        if present >= limit:
            # Alpaca's positions list can lag a sale by seconds (ALPACA.md §7): asked again POSITIONS_SETTLE_S apart,
            # PROTECTION_READS in all.
            again = self._held_reads < PROTECTION_READS
            self.log.info(f"position {self.label} the broker's position read for protection ({said}) leaves no smaller "
                          f"number to protect than its {limit} shares: "
                          + (f"its positions can lag a sale, asking again in {POSITIONS_SETTLE_S:g} s" if again
                             else "left to the doctor's pass"))
            if again:
                self._held_read_timer = tell_later(self.actor_ref, POSITIONS_SETTLE_S, ReadHeldForProtection())
            return
        self._protect_cap = present
        # After a restart (the cap is not kept) or an OCO's partial fill, a working OCO may cover them already.
        covered = "protected now" if self._unprotected_qty() > 0 else "under its working stop already"
        gone = ("sold outside Catalyst?" if present == held
                else "held by an open order Catalyst did not place, or sold outside it?")
        self.log.warning(f"position {self.label} the broker holds {present} of its {recorded} shares free ({said}): "
                         f"those {present} {covered}; the other {recorded - present}, {gone}, left to the doctor's "
                         "pass")
        self._protect(coalesce=False)

    def _on_filled_outside(self, msg: m.FilledOutside) -> None:
        """An order Catalyst has no row of filled in this symbol (the router's FilledOutside). On the exit side, it may
        have sold this position's shares: the next market exit reads the broker's positions only once they can show
        that (_outside_settled_at). Said once per order."""
        if msg.side != self.position.exit_side or self.position.is_terminal:
            return
        at = time.monotonic() - msg.seconds_ago
        if self._outside_first_at is None or self._outside_settled_at() <= at:
            self._outside_first_at = at  # a new run of them: the last one's put-off has passed (its cap counts anew)
        self._outside_fill_at = max(self._outside_fill_at, at)
        if msg.own_leg is None:
            self._sold_outside[msg.execution_id or f"{msg.broker_id}#{len(self._sold_outside)}"] = msg.qty
        said_as = (msg.broker_id, msg.own_leg)
        if said_as in self._outside_fills_said:
            return
        self._outside_fills_said.add(said_as)
        if msg.own_leg is not None:
            self.log.info(f"position {self.label} an order not recorded yet ({msg.broker_id[:8]}), probably our own "
                          f"{msg.own_leg} (an OCO leg not named yet, or its replacement), filled {msg.side} {msg.qty} "
                          f"{msg.symbol} at the broker: this position's shares may be sold; a market exit of it reads "
                          f"the broker's position {POSITIONS_SETTLE_S:g} s after that at the earliest")
            return
        self.log.warning(f"position {self.label} an order Catalyst has no row of ({msg.broker_id[:8]}) filled "
                         f"{msg.side} {msg.qty} {msg.symbol} at the broker: placed by hand, this position's shares may "
                         f"be gone; a market exit of it reads the broker's position {POSITIONS_SETTLE_S:g} s after that "
                         "at the earliest")

    def _doctor_pass_wanted(self, reason: str) -> bool:
        """Shares left to the doctor's pass (its heals write a sale by hand as this position's exit): one asked for
        now, not at the next periodic pass, minutes away. Once each DOCTOR_ASKED_AGAIN_S: a pass that cannot settle
        it (a hand order still working holds the shares: a review) re-protects, the broker refuses, the position
        gives up again, and asking each time would loop at the doctor's gap all day. False: not asked (no doctor:
        tests, the benchmarks; or asked less than that long ago)."""
        now = time.monotonic()
        if self._ask_doctor is None or now - self._doctor_asked_at < DOCTOR_ASKED_AGAIN_S:
            return False
        self._doctor_asked_at = now
        return self._ask_doctor(reason)

    def _outside_settled_at(self) -> float:
        """When the broker's positions list can show the fills outside Catalyst heard of since the last exit read taken
        (time.monotonic(); -inf if none): POSITIONS_SETTLE_S after the last, capped at OUTSIDE_FILLS_MAX_WAITS more
        past the first."""
        if self._outside_first_at is None:
            return float("-inf")
        last = min(self._outside_fill_at, self._outside_first_at + OUTSIDE_FILLS_MAX_WAITS * POSITIONS_SETTLE_S)
        if self._outside_wait_began is not None:
            last = min(last, self._outside_wait_began + OUTSIDE_FILLS_MAX_WAITS * POSITIONS_SETTLE_S)
        return last + POSITIONS_SETTLE_S

    def _others_at_broker(self) -> Decimal:
        """The other open positions' shares of this symbol (signed): the broker nets them with this one's."""
        return sum((p.quantity if p.side == "long" else -p.quantity
                    for p in self.writer.open_positions_for_reconciliation().get()
                    if p.symbol == self.plan.symbol and p.position_id != self.position_id), Decimal(0))

    def _done_waiting_for_entry_fills(self, arriving: Decimal) -> bool:
        now = time.monotonic()
        if self._entry_fills_waited_since is None:
            self._entry_fills_waited_since = now
        if now - self._entry_fills_waited_since < ENTRY_FILLS_WAIT_S:
            return False
        if self._gave_up_on_entry_fills:
            return True
        self._gave_up_on_entry_fills = True
        self.log.error(f"position {self.label} its entry's {arriving} shares the broker reports bought have no "
                       f"recorded execution after {ENTRY_FILLS_WAIT_S:.0f} s: exiting the {self.position.quantity} "
                       f"recorded; those {arriving} are left to the doctor's pass (check them at the broker)")
        return True

    def _go_on_after_a_filled_exit(self) -> None:
        """The market exit filled all it was sent for, and shares remain beyond what it sold (its executions counted
        as leaving until they come): entry shares recorded after it was sent (their fill event lost, brought by a
        catch-up while it worked, after the flatten gave up waiting for them). The flatten goes on with an exit of
        those, never leaving them with neither a stop nor an exit (a review: they sat bare until a restart). Judged on
        the state, whichever came first (the exit's status, its execution, the entry's); once per exit, as the next
        exit's row is not known here until the router has created it."""
        exit_id = self.exit_order_id
        view = self.orders.get(exit_id) if exit_id is not None else None
        # A `filled` saying no quantity (a malformed report) tells nothing of what it sold: nothing is sent on it.
        if (view is None or view.status is not OrderStatus.FILLED or view.filled_qty <= 0
                or exit_id in self._exits_gone_on_from
                or not self.flattening or self.position.status is not PositionStatus.OPEN
                or self.position.quantity - self._leaving() <= 0):
            return  # the usual case: the exit's execution closes (or will close) the position
        self._exits_gone_on_from.add(exit_id)
        self.exit_sent = False
        if self._exit_last_held is not None:
            self._exit_last_held -= view.filled_qty  # what the last answer leaves once this exit sold its part
        if self._kept_overnight:
            # The close came while it worked (its cancel lost the race to its fill): a market exit now would wait for
            # the next open with no stop under the shares. They are protected, and flattened at the open.
            self.log.warning(f"position {self.label} market exit o-{exit_id} filled after the close, yet "
                             f"{self.position.quantity - self._leaving()} shares remain (entry shares recorded after "
                             "it was sent): protected overnight, flattened at the next open")
            self._under_stops_overnight()
            return
        if self._exit_cut > 0:
            # Sent for only what the broker held (_on_exit_read). The rest are asked about again, but not at once: a
            # positions list read now can still show the shares this exit just sold (ALPACA.md §7), and an exit of
            # those would sell short. Usually gone (sold outside Catalyst), they can be ours after all (a list behind
            # another position's exit, or a rebuilt actor's entry fill): never left with no stop and no exit (a review).
            self._exit_cut = Decimal(0)
            self._exit_read_not_before = time.monotonic() + EXIT_NONE_RECHECK_S
            self.log.info(f"position {self.label} market exit o-{exit_id} filled; its other "
                          f"{self.position.quantity - self._leaving()} shares, which the broker did not hold, are "
                          f"asked about again in {EXIT_NONE_RECHECK_S:g} s")
            return
        # The broker's positions read once they can show this exit's fill: read sooner, a list still showing what it
        # sold sizes the next exit past the shares really there (a review: after a restart, a cut exit is not known
        # for one, and its rest was sold short).
        self._exit_read_not_before = time.monotonic() + POSITIONS_SETTLE_S
        self.log.warning(f"position {self.label} market exit o-{exit_id} filled, yet "
                         f"{self.position.quantity - self._leaving()} shares remain (entry shares recorded after it "
                         "was sent?): the flatten goes on with an exit of those once the broker's positions can show "
                         f"this one's fill ({POSITIONS_SETTLE_S:g} s)")

    def _exit_failed(self, msg: m.OrderUpdated) -> None:
        """The market exit ended unfilled or partly filled (rejected, cancelled, expired): the shares left are protected
        again, never left bare.
        If their protection was rejected too, the broker takes neither: tried again after a growing wait, not at
        once, which would place and reject a stop and an exit as fast as the broker answers."""
        self.flattening, self.exit_sent = False, False
        if (msg.status is OrderStatus.REJECTED and NO_SHARES_AVAILABLE in (msg.reason or "")
                and not self._kept_overnight and time.monotonic() - self._entry_filled_at < NO_SHARES_WINDOW_S):
            self._flatten_after_lag = self.flatten_reason
            self.log.warning(f"position {self.label} market exit o-{msg.order_id} refused for shares bought "
                             f"{time.monotonic() - self._entry_filled_at:.1f} s ago ({msg.reason}): the broker's order "
                             "entry can lag a fill; under stops until their OCO is taken, then flattened again "
                             f"({self.flatten_reason})")
            self._protect()
            return
        if msg.status is OrderStatus.REJECTED and self._protection_rejections:
            wait_s = protect_retry_wait_s(self._protection_rejections)
            self.log.critical(f"position {self.label} the broker rejects both its stop and its market exit "
                              f"({msg.reason or 'no reason given'}): {self.position.quantity} shares without a stop; "
                              f"trying again in {wait_s:g} s; protect them by hand at the broker if this lasts")
            if self._retry_timer:
                self._retry_timer.cancel()
            self._retry_timer = tell_later(self.actor_ref, wait_s, RetryProtection())  # ends a hold too
            return
        level = "WARNING" if self._kept_overnight else "ERROR"  # cancelled on purpose at the close, or a failure
        # Not flattened again by itself: the position does not know the close, and a flatten retried after it would
        # take the stop off for the night. The cycle, which does, asks again (CycleActor._retry_undone_flattens).
        undone = "" if self._kept_overnight else f"; its flatten ({self.flatten_reason}) is not done"
        filled = "unfilled" if msg.filled_qty == 0 else f"with {msg.filled_qty} filled"
        left = self.position.quantity - self._leaving()  # an exit's executions can follow its cancel's report
        self.log.log(level, f"position {self.label} market exit o-{msg.order_id} {msg.status} {filled} "
                     f"({msg.reason or 'no reason given'}); protecting the {left} shares again"
                     f"{undone}")
        self._protect()

    def _flatten_once_caught_up(self) -> None:
        """A protection leg acknowledged: the broker has the shares now. A flatten its order-entry lag refused goes
        again, once no leg of the position is still on its way (a cancel of a row without its broker id would wait)."""
        if self._flatten_after_lag is None or self.flattening:
            return
        if self._told_closed:  # the close came meanwhile: kept under stops overnight, the next open's flatten sells
            self._flatten_after_lag = None
            return
        if any(v.working and v.status is OrderStatus.CREATED for v in self.orders.values()):
            return
        reason, self._flatten_after_lag = self._flatten_after_lag, None
        self._flatten(f"{reason} (again: the broker has caught up with the fill)")

    def _keep_overnight(self) -> None:
        """The market closed while this position was flattening (KeepOvernight). A market exit not filled by the close
        waits for the next open (Alpaca queues one sent after the close; a day order sent before it expires), with
        no stop under the shares meanwhile: it is cancelled, and once it has ended unfilled the shares are protected
        again (_exit_failed). A flatten still waiting for its stops' cancels stops there: the shares are protected
        anew as those end. The next open flattens the position (the cycle's carried-position flatten)."""
        if (not self.flattening or self.position.status is not PositionStatus.OPEN or self._kept_overnight
                or self._sale_stands_overnight):
            return  # kept already (told again by the cycle after a rebuild that kept it), or late shares' sale
        self._kept_overnight = True
        exits = self._working_exits()
        self.log.warning(f"position {self.label} the market closed before its flatten ended ({self.flatten_reason}): "
                         f"kept under stops overnight, flattened at the next open"
                         + (f"; cancelling its market exit {', '.join(f'o-{i}' for i in exits)}" if exits else ""))
        if exits:
            self._cancel(exits, reason=OVERNIGHT_CANCEL)
            self._start_flatten_timer()  # a cancel that fails (an outcome unknown) is asked again
            return
        if self._exit_row_pending:
            self._start_flatten_timer()  # not waited for past a recheck (_check_flatten)
            return  # asked, its row not named yet: cancelled once it is (_on_orders_created), then protected
        self._under_stops_overnight()

    def _arm_market_timer(self) -> None:
        if self._market_timer:
            self._market_timer.cancel()
        self._market_timer = tell_later(self.actor_ref, wall_seconds(self.clock, MARKET_OPEN_RECHECK_S),
                                        CheckMarketOpen())

    def _check_market_open(self) -> None:
        reason = self._flatten_when_market_opens
        if reason is None or self.flattening or self.position.status is not PositionStatus.OPEN:
            return
        if self._market_is_closed():
            self._arm_market_timer()
            return
        self._flatten(f"{reason} (asked while the market was closed)")

    def _market_is_closed(self) -> bool:
        return self.market_closed() if self.market_closed is not None else self._told_closed

    def _under_stops_overnight(self) -> None:
        """Kept overnight with no exit of its own working: the flatten ends for the day, the shares go under stops
        until the next open's flatten."""
        self.flattening, self.exit_sent = False, False
        if self._flatten_timer:
            self._flatten_timer.cancel()
        self._protect()

    def _working_exits(self) -> tuple[int, ...]:
        return tuple(i for i, v in self.orders.items() if v.working and v.role == "flatten")

    def _start_flatten_timer(self, delay_s: float | None = None) -> None:
        if self._flatten_timer:
            self._flatten_timer.cancel()
        self._flatten_timer = tell_later(self.actor_ref, FLATTEN_RECHECK_S if delay_s is None else delay_s,
                                         CheckFlatten())

    def _check_flatten(self) -> None:
        # A pending position's flatten is its entry's cancel. One refused by an outage was never asked again: the
        # entry worked on at the broker after the outage, free to buy once the price came through its limit.
        pending = self._flatten_when_open is not None and self.position.status is PositionStatus.PENDING
        if self._kept_overnight:  # the market exit being cancelled at the close (_keep_overnight)
            working = self._working_exits()
            reason = OVERNIGHT_CANCEL
        elif pending:
            working = tuple(i for i, v in self.orders.items() if v.working)
            reason = str(self._flatten_when_open)
        else:
            working = tuple(i for i, v in self.orders.items() if v.working and v.role != "flatten")
            reason = f"flatten: {self.flatten_reason}"
        # Kept overnight, a working exit is cancelled again at each recheck even once its shares are under stops (an
        # exit named after they were put back): a cancel lost would leave it to sell at the open beside them.
        if (not self.flattening and not pending and not (self._kept_overnight and working)) or (
                self.exit_sent and not self._kept_overnight):
            return
        if not working:
            self._flatten_asks = 0
            if pending:
                return  # its entry ended: the position with it
            if self._kept_overnight and self._exit_row_pending:
                # Its exit's row still not named a recheck after the close (the router could not create it): the
                # shares go under stops now; the row, if it is named after all, is cancelled then.
                self._exit_row_pending = False
                self.log.warning(f"position {self.label} its market exit was asked and never named: kept under stops "
                                 "overnight without waiting for it")
                self._under_stops_overnight()
                return
            if self._kept_overnight:
                return
            if self._arriving() > 0 and self.entries:
                # The entry's missing executions: its report, read again, restarts the router's catch-up.
                self.router.tell(m.VerifyOrders(order_ids=tuple(self.entries)))
            self._exit_when_clear()  # the exit goes now if nothing is left to wait for (a backstop for a missed step)
            return
        self._flatten_asks += 1
        if self._flatten_asks == 1:
            self._flatten_asked_since = time.monotonic()
        said = said_through_an_outage(self._flatten_asks, every=FLATTEN_RECHECKS_SAID_EVERY)
        asked = (f" (asked {self._flatten_asks} times in {time.monotonic() - self._flatten_asked_since:.0f} s)"
                 if self._flatten_asks > 1 else "")
        self.log.log("WARNING" if said else "DEBUG",
                     f"position {self.label} flatten still waiting for {working} to end: asking the broker again{asked}")
        # Where the broker answers nothing, this line says the wait about once a minute: the cancels of the rechecks
        # between would each say it again, every FLATTEN_RECHECK_S, for as long as the outage lasts. The reads never
        # say it: a said recheck's cancels say what the broker answered, and its reads' failed calls (three a read)
        # were another 16 WARNING lines with nothing to add.
        self.router.tell(m.VerifyOrders(order_ids=working, quiet=True))
        self._cancel(working, reason=reason, quiet=not said)
        self._start_flatten_timer()

    # --- closing ----------------------------------------------------------------------------------------------

    def _after_close(self) -> None:
        if self._entry_working() and self.working_entry_id not in self._cancels_asked:
            # The trade is over, and the entry's rest could still buy: a limit the falling price made marketable, or
            # one that has filled already and whose event is late or lost. Not left for the siblings' grace.
            self.log.info(f"position {self.label} closed while its entry o-{self.working_entry_id} still works: "
                          "cancelling its rest")
            self._cancel((self.working_entry_id,), reason="position closed")
        working = tuple(i for i, v in self.orders.items() if v.working)
        if working:
            self._timer = tell_later(self.actor_ref, wall_seconds(self.clock, SIBLING_GRACE_S), CheckSiblings())

    def _check_siblings(self) -> None:
        working = tuple(i for i, v in self.orders.items() if v.working)
        if not working:
            return
        # Asked again until they have ended: these cancels, and the close's of its entry's rest, were asked once here
        # and never again, so one an outage refused left the order working at the broker after it (a limit entry,
        # free to buy for a trade that was over; a leg, to sell shares no longer held). The router does not retry a
        # cancel. The waits double from FLATTEN_RECHECK_S to a minute, said at the second ask and then once a minute:
        # an order the broker no longer knows (its cancel and read each a 404, nothing ever ends it here) would
        # otherwise spend two calls of the account's 200 a minute every 2 s for as long as the daemon runs.
        self._sibling_asks += 1
        wait_s = min(FLATTEN_RECHECK_S * 2.0 ** min(self._sibling_asks - 1, 10), SIBLINGS_ASKED_AGAIN_MAX_S)
        said = self._sibling_asks == 2 or wait_s >= SIBLINGS_ASKED_AGAIN_MAX_S
        if self._sibling_asks == 1:
            self.log.info(f"position {self.label} closed; no cancel event yet for {working}: asking the broker")
        else:
            self.log.log("WARNING" if said else "DEBUG", f"position {self.label} closed; {working} still working "
                         f"after {self._sibling_asks - 1} asks: asking the broker again, then in {wait_s:.0f} s")
        self.router.tell(m.VerifyOrders(order_ids=working, quiet=self._sibling_asks > 1))
        self._cancel(working, reason="position closed", quiet=self._sibling_asks > 1 and not said)
        self._timer = tell_later(self.actor_ref, wait_s, CheckSiblings())

    def _finish_if_done(self) -> None:
        # stop() takes effect after the messages already queued (an OCO sibling's cancel beside the exit fill, a
        # timer): each would otherwise find the position done again, log it again and tell the system again.
        if self._finished or not self.position.is_terminal or any(v.working for v in self.orders.values()):
            return
        if self._awaiting_late_entry_fills():
            return
        self._finished = True
        self.system.tell(m.PositionFinished(key=self.label, status=str(self.position.status),
                                            realized_pnl=self.position.realized_pnl))
        self.log.info(f"position {self.label} done ({self.position.status}); actor stops")
        self.stop()

    def _hand_over_late_entry_shares(self, execution: m.Execution) -> None:
        """An entry execution recorded after this position closed (its stop filled the shares recorded while the
        entry's last fill event was lost). A closed position takes no more shares, and those are at the broker with
        no stop: this actor stops, and the supervisor rebuilds the position from its recorded fills, which hold them
        (_restore sells them)."""
        if self._handed_over:
            return  # a second late execution: the rebuilt actor reads it from the database too
        self.log.warning(f"position {self.label} its entry's execution of {execution.qty} @ {execution.price} was "
                         "recorded after the position closed: those shares are at the broker with no stop; handing "
                         "the position over to be rebuilt from its recorded fills and sold")
        self._finished = self._handed_over = True
        self.system.tell(m.LateEntryShares(entry_order_id=self.entry_order_id, subject=f"position {self.label}",
                                           qty=execution.qty, handed_over_by=self.actor_ref))
        self.stop()

    def _hand_over_stale_book(self, detail: str) -> None:
        """Rebuilt from a book read before the router committed rows of this position (m.StaleBook): executions
        told now would be protected again beside the OCO already sent for them. Handed over to be rebuilt from the
        database as it is now, which holds those rows."""
        if self._handed_over:
            return
        self.log.warning(f"position {self.label} was rebuilt from a book read before {detail}: handing it over to be "
                         "rebuilt from the database as it is now")
        self._finished = self._handed_over = True
        self.system.tell(m.RebuildFromDatabase(entry_order_id=self.entry_order_id, subject=f"position {self.label}",
                                               detail=detail, handed_over_by=self.actor_ref))
        # A flatten this actor had begun lives in its memory only (its exit, asked on the stale book, is not sent):
        # the actor rebuilt in its place takes it up. Kept overnight, the close is what it carries instead: a flatten
        # passed on then would take the successor's stops off for the night.
        if self.flattening and self.entry_order_id is not None:
            self.system.tell(m.ForSuccessor(entry_order_id=self.entry_order_id, message=m.KeepOvernight()
                                            if self._kept_overnight else m.Flatten(reason=self.flatten_reason)))
        elif self._flatten_when_market_opens is not None and self.entry_order_id is not None:
            # Put off until the market opens (a review): the successor, asked while it is closed, puts it off too.
            self.system.tell(m.ForSuccessor(entry_order_id=self.entry_order_id,
                                            message=m.Flatten(reason=self._flatten_when_market_opens)))
        self.stop()

    def _sell_late_entry_shares(self, restored: Any) -> None:
        """Rebuilt with its row closed while its recorded fills still hold shares: entry executions recorded after
        the close (_hand_over_late_entry_shares, or the router finding no actor for them). The trade is over (its
        stop or target filled, or its flatten), so those shares are sold at market, as its exit would have sold them
        had they been recorded in time; their fills then close the row again, its P&L counting every share.

        Only once the broker says it holds them: shares sold by hand meanwhile (the doctor's halt over them says to)
        are recorded nowhere here, and selling them again would leave the account short."""
        row = restored.position_row
        if row is None or row.status != "closed" or self.position.status is not PositionStatus.OPEN:
            return
        self._asking_broker = self._selling_late_shares = True
        self.log.warning(f"position {self.label} its row is closed but its recorded fills hold "
                         f"{self.position.quantity} more shares (entry executions recorded after the close): a market "
                         f"{self.position.exit_side} of them once the broker says it holds them (under stops until "
                         "the next open if the market is closed)")
        self.router.tell(m.ReadBrokerPosition(symbol=self.plan.symbol, reply_to=self.actor_ref))

    def _on_broker_position(self, msg: m.BrokerPositionRead) -> None:
        if not self._asking_broker or self._finished:
            return
        self._late_share_reads += 1
        if msg.error is not None:
            late = self.position.quantity - self._leaving()
            selling = self.exit_sent and bool(self._working_exits())
            if self.protected_qty() >= late or selling:
                # Under stops of their own (kept overnight, this actor restored at a start), or their sale queued for
                # the open (their stops refused): not given up on, which would cancel those orders with the position's
                # others (two reviews); asked again, less often, for as long.
                reads = self._late_share_reads
                wait_s = min(LATE_SHARES_RETRY_S * 2 ** min(reads - 1, 4), PROTECT_RETRY_MAX_S)
                said = reads <= LATE_SHARES_READS or reads % PROTECT_RETRY_SAID_EVERY == 0
                self.log.log("WARNING" if said else "DEBUG",
                             f"position {self.label} could not read the broker's {self.plan.symbol} position "
                             f"({msg.error}; {reads} times): asking again in {wait_s:g} s; its {late} late shares "
                             + ("keep their sale queued" if selling else "stay under their stops") + " meanwhile")
                self._retry_timer = tell_later(self.actor_ref, wait_s, CheckLateShares())
                return
            if self._late_share_reads < LATE_SHARES_READS:
                self.log.warning(f"position {self.label} could not read the broker's {self.plan.symbol} position "
                                 f"({msg.error}): asking again in {LATE_SHARES_RETRY_S:g} s; its "
                                 f"{self.position.quantity} late shares wait without a stop")
                self._retry_timer = tell_later(self.actor_ref, LATE_SHARES_RETRY_S, CheckLateShares())
                return
            return self._leave_late_shares(f"the broker's position could not be read {self._late_share_reads} times "
                                           f"({msg.error})")
        others = self._others_at_broker()
        theirs = held_at_broker(self.position.side, msg.qty, others)
        late = self.position.quantity - self._leaving()  # with any recorded since the question (no OCO was placed)
        if theirs < late:
            held = (f"the broker holds {msg.qty} {self.plan.symbol} and the open positions {others}, so at most "
                    f"{max(theirs, Decimal(0))} can be these")
            self._late_shares_short_reads += 1  # its own count: reads that failed do not use up these (a review)
            if self._late_shares_short_reads < LATE_SHARES_LAG_READS:
                # A review: a positions list behind the fill just recorded left these shares unsold, with no stop.
                self.log.warning(f"position {self.label} {held} of its {late} late entry shares: the broker's positions "
                                 f"can lag a fill; asking again in {LATE_SHARES_RETRY_S:g} s")
                self._retry_timer = tell_later(self.actor_ref, LATE_SHARES_RETRY_S, CheckLateShares())
                return
            return self._leave_late_shares(f"{held} (sold by hand?)")
        self._asking_broker = False
        if self.exit_sent:
            return  # their sale works already (queued for the open, kept by a restart): the broker holds them for it
        if self._market_is_closed():
            # Sold now, they would wait for the next open with no stop: under stops overnight instead, and the next
            # open's flatten of positions carried over sells them.
            self.log.warning(f"position {self.label} the market is closed: its {late} late entry shares go under "
                             "stops overnight, sold at the next open")
            self._protect()
            return
        self._flatten("entry shares recorded after the position closed")

    def _leave_late_shares(self, why: str) -> None:
        """Not sold: the row stays closed, and the doctor's pass compares the broker with the database. An order of
        the position still working (a leg whose cancel has not come yet) is cancelled: no actor is left to own it."""
        self.log.error(f"position {self.label} its {self.position.quantity} late entry shares are not sold: {why}; "
                       f"check {self.plan.symbol} at the broker")
        working = tuple(i for i, v in self.orders.items() if v.working)
        if working:
            self._cancel(working, reason="position closed")
        self._asking_broker = False
        self._finished = True
        self.stop()

    def _awaiting_late_entry_fills(self) -> bool:
        """Closed while its entry reports more shares filled than its executions (their fill event lost): those
        shares are at the broker with no stop. The actor waits for their executions, asking about the entry every
        FLATTEN_RECHECK_S (the router's catch-up brings them), and hands the position over to sell them
        (_hand_over_late_entry_shares). Stopping at once instead, an execution told in the instant before the stop
        is dropped with it. Capped at ENTRY_FILLS_WAIT_S: then they are the doctor's."""
        arriving = self._arriving()
        if arriving == 0 or self.position.status is not PositionStatus.CLOSED or self.entry_order_id is None:
            return False
        now = time.monotonic()
        if self._late_fills_waited_since is None:
            self._late_fills_waited_since = now
            self.log.warning(f"position {self.label} closed, but its entry filled {arriving} more at the broker than "
                             "its executions say: waiting for them, to sell them")
        elif now - self._late_fills_waited_since >= ENTRY_FILLS_WAIT_S:
            self.log.error(f"position {self.label} closed; its entry's {arriving} shares the broker reports bought "
                           f"have no recorded execution after {ENTRY_FILLS_WAIT_S:.0f} s: left to the doctor's pass "
                           "(check them at the broker)")
            return False
        self.router.tell(m.VerifyOrders(order_ids=tuple(self.entries)))
        if self._timer:
            self._timer.cancel()
        self._timer = tell_later(self.actor_ref, FLATTEN_RECHECK_S, CheckLateEntryFills())
        return True

    def _settle_position_row(self, restored: Any) -> None:
        """A kill between an exit fill's commit and the positions row's leaves that row behind the fills: the
        doctor would call it a phantom and halt entries. The recorded fills are the truth; bring the row to them."""
        row = restored.position_row
        if row is None or row.status != "open" or self.position_id is None:
            return
        after = self.position
        if after.status is PositionStatus.CLOSED:
            self._write_position(after, restored.last_fill_at or self.clock.now())
            self.log.warning(f"position {self.label} was closed by fills recorded before a restart: row closed "
                             f"realized={after.realized_pnl}")
        elif after.status is PositionStatus.OPEN and after.quantity != row.quantity:
            self._write_position(after, self.clock.now())
            self.log.warning(f"position {self.label} row said {row.quantity}, the recorded fills {after.quantity}: "
                             f"row updated")

    def _write_position(self, after: Position, at: Any) -> None:
        """The positions row brought to `after`: closed with its exit price and realized P&L, or its new quantity."""
        if after.status is PositionStatus.CLOSED:
            self.writer.close_position(self.position_id, exit_price=after.avg_exit_price, exit_time=at,
                                       realized_pnl=after.realized_pnl).get()
        else:
            self.writer.update_position(self.position_id, quantity=after.quantity, entry_price=after.avg_entry_price,
                                        realized_pnl=after.realized_pnl).get()

    def _register(self, orders: Any, recorded: dict[int, Decimal], executions: tuple[str, ...]) -> m.Register:
        """Our orders claimed from the router, which is asked to fetch any execution a row reports and we lack."""
        short = [o for o in orders if o.filled_qty > recorded.get(o.order_id, Decimal(0))]
        since = min(((o.submitted_at or o.created_at) for o in short), default=None)
        return m.Register(
            owner=self.actor_ref, order_ids=tuple(self.orders),
            executions_missing_since=since - timedelta(minutes=5) if since is not None else None,
            executions_missing=", ".join(f"o-{o.order_id} {recorded.get(o.order_id, Decimal(0))} of {o.filled_qty}"
                                         for o in short) or None,
            known_executions=executions, book_statuses=tuple((o.order_id, str(o.status)) for o in orders))

    def _restore(self, restored: Any) -> None:
        """Rebuild from the database after a restart or a crash: replay the recorded fills, re-register orders."""
        self._restored_at = time.monotonic()  # its entry's last fill may be a moment ago: the positions list can lag
        self.entry_order_id = restored.entry_order_id
        self.entries = [e.order_id for e in restored.entries] or [restored.entry_order_id]
        self.position_id = restored.position_id
        row = restored.position_row
        first_fill = next((price for role, _, price in restored.fills if role == "entry"), None)
        if row is not None and row.stop_loss is not None and row.take_profit is not None and first_fill is not None:
            # The row's stop and target are its first fill's: measured from that fill, a later piece or a
            # re-protection keeps at most the planned risk per share.
            self.exits_basis = (first_fill, row.stop_loss, row.take_profit)
        recorded = dict(restored.recorded)
        for order in restored.orders:
            # The recorded fills are replayed below: an exit's recorded executions are applied, as before the restart.
            # Its row may say more filled than they add up to (a status report committed, the last piece's execution
            # not yet: its stream event lost before a kill). Those shares are sold at the broker, so they count as
            # leaving (_leaving) until their execution comes, not as shares to protect: their OCO would be refused
            # for want of shares (chaos, seed 153), and a market exit instead would sell short. The other way round,
            # executions recorded past the row's last status: the broker filled at least those.
            executed = recorded.get(order.order_id, Decimal(0))
            self.orders[order.order_id] = OrderView(role=order.role, status=OrderStatus(order.status),
                                                    filled_qty=max(order.filled_qty, executed),
                                                    acknowledged=OrderStatus(order.status) in ACKNOWLEDGED,
                                                    applied_qty=executed)
        for tp, sl, qty in restored.pairs:
            self.pairs.append(OcoPair(tp, sl, qty))
        self.position = replay_fills(self.position, [
            (self.position.entry_side if role == "entry" else self.position.exit_side, fill_qty, price)
            for role, fill_qty, price in restored.fills])
        if self.position.status is PositionStatus.OPEN and self.position_id is None:
            # Killed after the entry's fill was committed but before the position row: write it now (idempotent),
            # with the first fill's stop and target, as that fill's own writes would have.
            stop, target = self._exits_at(first_fill) if first_fill is not None else (
                self.plan.stop_loss, self.plan.take_profit)
            self.position_id = self.writer.open_position_for_entry(
                entry_order_id=self.entry_order_id, quantity=self.position.quantity,
                entry_price=self.position.avg_entry_price, entry_time=self.clock.now(),
                stop_loss=stop, take_profit=target, replacements=tuple(self.entries[1:]),
            ).get().position_id
            if first_fill is not None:
                self.exits_basis = (first_fill, stop, target)  # as the row-exists branch above measures
        self._settle_position_row(restored)
        exits = self._working_exits()
        if exits and self.position.status is PositionStatus.OPEN:
            # Killed while its market exit worked: the shares are the exit's. Resume waiting for it (its fill closes
            # the position; ended unfilled, the shares are protected again) instead of protecting them, which the
            # broker refuses while the exit holds them (and a refused protection would flatten once more).
            self.flattening, self.exit_sent, self.flatten_since = True, True, self.clock.now()
            self.exit_order_id = exits[-1]
            self.flatten_reason = f"resumed after a restart: its market exit {', '.join(f'o-{i}' for i in exits)} works"
        self.router.tell(self._register(restored.orders, recorded, restored.executions))
        replaced = tuple(leg for pair in self.pairs for leg in (pair.take_profit, pair.stop_loss)
                         if (view := self.orders.get(leg)) is not None and view.status is OrderStatus.REPLACED)
        if replaced and self.position.status is PositionStatus.OPEN:
            # A leg `replaced` with no replacement in the book (the pairs follow every replacement recorded): killed
            # between its status and its replacement's row. The broker's report of it names the new order, which the
            # router then follows (m.OrderReplaced); until then its shares get neither an OCO nor a market exit.
            self._awaited_replacements = set(replaced)
            self.log.warning(f"position {self.label} its {', '.join(f'o-{i}' for i in replaced)} was replaced at the "
                             f"broker before a restart, by an order not recorded yet: asking the broker, nothing sent "
                             f"for those shares until it answers")
        entry = self.orders.get(self.working_entry_id)
        if entry is not None and entry.status is OrderStatus.REPLACED and not self.position.is_terminal:
            # Its working entry `replaced` with no replacement in the book (killed between the two commits, a limit
            # moved by hand): the new order works at the broker, in no row. Asked about as a leg is; the router
            # follows it (m.OrderReplaced: its fills this position's) or says it cannot (a pending position ends).
            self._awaited_replacements.add(self.working_entry_id)
            self.log.warning(f"position {self.label} its entry o-{self.working_entry_id} was replaced at the broker "
                             "before a restart, by an order not recorded yet: asking the broker, to follow it")
        if self._awaited_replacements:
            self._ask_about_replacements()  # legs and entry in one question, then every REPLACEMENT_ASK_S
        if self.flattening and self._market_is_closed():
            if row is not None and row.status == "closed":
                # Late entry shares' sale: queued for the open when their stops were refused, it is what settles them
                # (a review: cancelled at each restart, stops refused, queued again; a kill in between left neither).
                self._sale_stands_overnight = True
            else:
                # Rebuilt while the market is closed (a crash after the close, a start before the open) with its exit
                # working: the cycle told the actor this replaces of the close, not this one. Cancelled, as then.
                self._keep_overnight()
        leaving = self._leaving() if self.position.status is PositionStatus.OPEN else Decimal(0)
        self.log.info(f"position {self.label} restored {self.position.status} qty={self.position.quantity} "
                      f"protected={self.protected_qty()}"
                      + (f" leaving={leaving} (filled at the broker, executions not recorded yet: the catch-up brings "
                         "them)" if leaving else ""))
        self._sell_late_entry_shares(restored)  # after Register: its exit's events come to this actor
        self._protect()
        if self.position.status is PositionStatus.CLOSED:
            self._after_close()
        self._finish_if_done()
