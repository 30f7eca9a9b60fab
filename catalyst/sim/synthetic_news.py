"""Made-up companies and news texts for the synthetic market (catalyst headlines and unrelated noise)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

_NAME_HEADS = (
    "Aurora", "Bluefin", "Cobalt", "Driftwood", "Ember", "Fathom", "Granite", "Halcyon", "Ironleaf",
    "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Obsidian", "Pinecrest", "Quarry",
    "Redtail", "Solstice", "Tidewater", "Umbra", "Vantor", "Willowby", "Xenith", "Yarrow", "Zephyrine",
)
_NAME_TAILS = (
    ("Therapeutics", "TX"), ("Robotics", "RB"), ("Semiconductor", "SM"), ("Energy", "EN"),
    ("Logistics", "LG"), ("Biosciences", "BS"), ("Software", "SW"), ("Mining", "MN"),
    ("Aerospace", "AE"), ("Foods", "FD"), ("Networks", "NW"), ("Motors", "MT"),
)


@dataclass(frozen=True, slots=True)
class Company:
    symbol: str
    name: str


def make_universe(count: int) -> list[Company]:
    """`count` made-up companies; the same count always gives the same list (independent of the seed)."""
    companies: list[Company] = []
    taken: set[str] = set()
    for index in range(len(_NAME_HEADS) * len(_NAME_TAILS)):
        head = _NAME_HEADS[index % len(_NAME_HEADS)]
        tail, tail_code = _NAME_TAILS[(index // len(_NAME_HEADS) + index) % len(_NAME_TAILS)]
        symbol = (head[:2] + tail_code).upper()
        if symbol in taken:
            symbol = (head[:3] + tail_code[0]).upper()
        if symbol in taken:
            continue
        taken.add(symbol)
        companies.append(Company(symbol=symbol, name=f"{head} {tail}"))
        if len(companies) == count:
            return companies
    raise ValueError(f"the synthetic universe has at most {len(companies)} names, asked for {count}")


class CatalystKind(StrEnum):
    EARNINGS_BEAT = "earnings_beat"
    FDA_APPROVAL = "fda_approval"
    CONTRACT_WIN = "contract_win"
    GUIDANCE_RAISE = "guidance_raise"
    PARTNERSHIP = "partnership"
    BUYOUT_OFFER = "buyout_offer"


_CATALYST_TEXTS: dict[CatalystKind, tuple[str, str]] = {
    CatalystKind.EARNINGS_BEAT: (
        "{name} ({symbol}) beats quarterly earnings estimates, revenue up {pct}% year over year",
        "{name} reported EPS well above consensus and raised its margin outlook.",
    ),
    CatalystKind.FDA_APPROVAL: (
        "{name} ({symbol}) receives FDA approval for its lead candidate",
        "The agency approved the company's application ahead of the expected decision date.",
    ),
    CatalystKind.CONTRACT_WIN: (
        "{name} ({symbol}) wins ${amount} million multi-year contract",
        "The award is the largest in the company's history.",
    ),
    CatalystKind.GUIDANCE_RAISE: (
        "{name} ({symbol}) raises full-year guidance by {pct}%",
        "Management cited strong demand and improving supply conditions.",
    ),
    CatalystKind.PARTNERSHIP: (
        "{name} ({symbol}) announces strategic partnership with a major industry player",
        "The agreement includes an upfront payment and milestone-based royalties.",
    ),
    CatalystKind.BUYOUT_OFFER: (
        "{name} ({symbol}) confirms receipt of a non-binding acquisition proposal",
        "The board will evaluate the proposal with its advisers.",
    ),
}

_NOISE_TEXTS = (
    ("{name} ({symbol}) to present at investor conference next week", "Company presentation scheduled."),
    ("Analyst reiterates Hold rating on {name} ({symbol})", "No change to the price target."),
    ("{name} ({symbol}) declares regular quarterly dividend", "The dividend is unchanged from last quarter."),
    ("{name} ({symbol}) appoints new chief financial officer", "The appointment is effective next month."),
    ("{name} ({symbol}) files annual report", "The filing contains no material changes."),
    ("Sector roundup: {name} ({symbol}) among names to watch", "A summary of today's sector activity."),
)

NEWS_SOURCES = ("benzinga", "globenewswire", "businesswire", "prnewswire")
NEWS_AUTHORS = ("Sim Newsdesk", "Catalyst Wire", "Emulator Staff")


def catalyst_text(kind: CatalystKind, company: Company, rng: np.random.Generator) -> tuple[str, str]:
    headline, summary = _CATALYST_TEXTS[kind]
    fields = {
        "name": company.name,
        "symbol": company.symbol,
        "pct": int(rng.integers(12, 60)),
        "amount": int(rng.integers(40, 900)),
    }
    return headline.format(**fields), summary


def noise_text(company: Company, rng: np.random.Generator) -> tuple[str, str]:
    headline, summary = _NOISE_TEXTS[int(rng.integers(0, len(_NOISE_TEXTS)))]
    return headline.format(name=company.name, symbol=company.symbol), summary
