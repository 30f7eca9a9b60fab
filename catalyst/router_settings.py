"""The `[router]` section: order-router tuning (here, not in actors/, so config never imports an actor)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RouterSettings(BaseModel):
    """Order router tuning (the `[router]` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # see catalyst.config.Section

    # Wall seconds a fill the broker reports (submit response, REST) may wait for its stream event before the
    # router fetches executions over REST: a REST report (or a submit reply saying "filled") can be ahead of it.
    missing_execution_grace_s: float = Field(default=2.0, ge=0)
    # Wall seconds the router holds a submit result saying "filled", or acknowledging a market order with nothing
    # filled yet (Alpaca answers a market order `accepted`, then fills it), for that fill's stream event, usually a
    # millisecond or so behind it: both then go in one commit, and the fill does not queue behind the result's own.
    # A limit or stop order's acknowledgement is never held.
    fill_event_wait_s: float = Field(default=0.002, ge=0, le=1.0)
    # Wall seconds an acknowledgement-only trade update (new, pending_new, accepted) of an order the router already
    # tracks may wait while fills and protection submits are being handled: it carries no shares and no end, and
    # it is recorded and applied as soon as the router is idle, or after this long at the latest. 0: never waits.
    routine_update_wait_s: float = Field(default=1.0, ge=0, le=60.0)
    # Wall seconds a market order may stay acknowledged without a fill before the router asks the broker for it over
    # REST; then again after twice as long, up to MARKET_FILL_CHECK_MAX_S, after which the doctor's passes take over.
    # Alpaca answers a market order `accepted` and reports its fills only by the stream: a fill event lost without a
    # disconnect (no reconnect, so no catch-up) would otherwise leave the shares unprotected until the doctor's next
    # pass. A market order fills in milliseconds in the session, so a healthy day makes no such call. 0: never asks.
    market_fill_check_s: float = Field(default=2.0, ge=0, le=60.0)
    # Broker workers, each with its own connection: how many protection calls (stop-losses, OCOs, exits, cancels) can
    # be on the wire at once, and how many entries, lookups and catch-up reads. Every fill's protection waits for a
    # free protection worker: against a broker 20 ms away, 100 fills are protected in 1.6-1.7 s with 2 and
    # 0.53-0.56 s with 8. On loopback the burst is mostly faster with 8 too, while 1,000 live positions route closes
    # slower (more calls on the one GIL): docs/BENCHMARKS.md, eleventh session. All workers share one rate budget.
    # Exchange seconds an entry row may have waited, created but never acknowledged, for a restart to still send
    # it (a crash between its commit and its submit): older, it is not sent, a market buy nobody decided now; the
    # doctor asks the broker for it by its client_order_id and retires it if absent.
    entry_resend_max_age_s: float = Field(default=120.0, gt=0)
    # Times a stop's, an OCO's or an exit's submit that ended with its outcome unknown (5xx, timeouts, the look-up
    # failing too) is sent again by the router, with the same client_order_id (so a first attempt that did land
    # makes the broker refuse it as a duplicate, and the look-up that follows answers), 1, 2, 4 … s apart, before it
    # is left to the doctor's look-up after doctor.stuck_after_s: a few seconds of a failing broker then cost a
    # stop a few seconds, not minutes. An entry is never sent again this way. 0: left to the doctor at once. A send
    # the broker answered nothing to (its look-up failing too: an outage) is not counted: it goes on until it answers.
    unknown_resends: int = Field(default=3, ge=0, le=20)
    protection_workers: int = Field(default=8, ge=1, le=32)
    general_workers: int = Field(default=2, ge=1, le=32)
