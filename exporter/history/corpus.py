"""The evaluation corpus: named scenarios (account shape + labelled anomalies) that `billingwatch evaluate` scores.

Every scenario is a warm-up (not scored: baselines fill, 28 days for the seasonal rules' 4 weeks) followed by an
evaluated period, which starts on a Monday 00:00 UTC. Anomaly times are offsets into the evaluated period.
Volumes are live charge attempts a day. Scenarios marked `quick` are small enough for the test suite.

Why these spans: 35 days (28 + 7) at a 2-minute scrape is the largest history the backtest keeps under its
25,000-scrape budget, and gives the weekly-seasonal baselines four past weeks. The 50,000-a-day scenario runs
4 days (1 + 3) at 1-minute scrapes: its ~70,000 events a day would make 35 days take ~10 minutes on its own, and
what it checks (outages and bursts judged on windows of an hour) needs no weekly baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.history.generator import DAY, HOUR
from exporter.history.scenario import AnomalySpec, Label, ScenarioGenerator, TrafficSpec

EVAL_START = 1769990400.0  # 2026-02-02 00:00 UTC, a Monday
WARMUP_DAYS = 28.0
EVAL_DAYS = 7.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    spec: TrafficSpec
    anomalies: tuple[AnomalySpec, ...] = ()
    warmup_days: float = WARMUP_DAYS
    eval_days: float = EVAL_DAYS
    seed: int = 1
    scrape_interval: float = 120.0
    quick: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def start(self) -> float:
        return EVAL_START - self.warmup_days * DAY

    @property
    def end(self) -> float:
        return EVAL_START + self.eval_days * DAY

    def generator(self) -> ScenarioGenerator:
        return ScenarioGenerator(
            self.spec,
            start=self.start,
            days=self.warmup_days + self.eval_days,
            eval_start=EVAL_START,
            anomalies=self.anomalies,
            seed=self.seed,
        )

    def generate(self) -> tuple[list[tuple[float, dict]], list[Label]]:
        gen = self.generator()
        return gen.generate(), gen.labels


def at(day: float, hour: float = 0.0) -> float:
    """Offset into the evaluated period: day 0 is the Monday it starts on."""
    return day * DAY + hour * HOUR


MULTI = (("usd", 0.6), ("eur", 0.25), ("gbp", 0.15))
SIX = (("usd", 0.4), ("eur", 0.2), ("jpy", 0.15), ("krw", 0.1), ("kwd", 0.05), ("brl", 0.1))
MID = TrafficSpec(charges_per_day=1500, weekend_factor=0.45, currencies=MULTI)

SCENARIOS: tuple[Scenario, ...] = (
    # -- clean histories: nothing may alert ------------------------------------------------------------------------
    Scenario(
        "tiny-clean",
        "30 charges/day, weekends at 45 %, USD",
        TrafficSpec(30, weekend_factor=0.45, subscription_share=0.2),
        seed=11,
    ),
    Scenario(
        "small-anchor-clean",
        "80 charges/day, 60 % monthly renewals, 70 % of them on the 4th (a renewal day in the evaluated week)",
        TrafficSpec(
            80,
            weekend_factor=0.45,
            subscription_share=0.6,
            anchor_share=0.7,
            anchor_day=4,
            currencies=(("usd", 0.8), ("eur", 0.2)),
        ),
        seed=12,
    ),
    Scenario(
        "mid-weekly-clean",
        "1,500/day, weekends at 45 %, USD/EUR/GBP, 40 test-mode charges/day, pre-basil API for the first 14 days",
        TrafficSpec(1500, weekend_factor=0.45, currencies=MULTI, test_charges_per_day=40, legacy_days=14),
        seed=13,
    ),
    Scenario(
        "mid-growth-clean",
        "1,500/day growing 5 % a week",
        TrafficSpec(1500, weekend_factor=0.45, growth_per_week=0.05, currencies=MULTI),
        seed=14,
    ),
    Scenario(
        "mid-decline-clean",
        "1,500/day declining 4 % a week",
        TrafficSpec(1500, weekend_factor=0.45, growth_per_week=-0.04, currencies=MULTI),
        seed=15,
    ),
    Scenario(
        "multi-currency-clean",
        "400/day over USD, EUR, JPY, KRW (zero-decimal), KWD (three-decimal), BRL",
        TrafficSpec(400, weekend_factor=0.6, currencies=SIX),
        seed=16,
    ),
    Scenario(
        "large-clean",
        "10,000/day, weekends at 60 %, 20 % renewals; the endpoint takes charge/invoice events only",
        TrafficSpec(
            10000,
            weekend_factor=0.6,
            subscription_share=0.2,
            currencies=MULTI,
            payment_intents=False,
            filler_per_charge=0.0,
        ),
        seed=17,
    ),
    Scenario(
        "b2b-clean",
        "300/day, a business-hours account: weekends at 10 %, 95 % diurnal swing peaking 14:00 UTC",
        TrafficSpec(300, weekend_factor=0.1, diurnal_amplitude=0.95, peak_hour_utc=14.0),
        seed=43,
    ),
    Scenario(
        "fast-growth-clean",
        "100/day growing 15 % a week (a young account: +75 % over the warm-up)",
        TrafficSpec(100, weekend_factor=0.6, growth_per_week=0.15),
        seed=44,
    ),
    Scenario(
        "high-risk-clean",
        "600/day with 18 % declines, 0.5 % disputes, 12 % refunds (high but normal for the account)",
        TrafficSpec(
            600,
            weekend_factor=0.8,
            decline_rate=0.18,
            renewal_decline_rate=0.15,
            dispute_rate=0.005,
            refund_rate=0.12,
        ),
        seed=45,
    ),
    Scenario(
        "mid-renewal-clean",
        "1,500/day, 50 % renewals, 70 % of them on the 29th: the renewal day is in the week before the evaluated "
        "one, so every baseline of the evaluated week has it among its weeks",
        TrafficSpec(
            1500,
            weekend_factor=0.45,
            subscription_share=0.5,
            anchor_share=0.7,
            anchor_day=29,
            currencies=(("usd", 0.7), ("eur", 0.3)),
        ),
        seed=61,
    ),
    # -- anomalies -----------------------------------------------------------------------------------------------
    Scenario(
        "tiny-anomalies",
        "30/day: a total outage, a duplicate charge, a negative invoice, a silent lapse, a 50 % revenue drop",
        TrafficSpec(30, weekend_factor=0.45, subscription_share=0.2),
        (
            AnomalySpec("silent_lapse", at(0, 6)),
            # `size` counts attempts, retries included: with 5 this hour had 5 attempts from only 3 payers (two
            # retried at once), which 7 % declines explain about once in 3,000 such hours. 7 tops it up to 5 payers.
            AnomalySpec("total_outage", at(1, 15), HOUR, size=7),
            AnomalySpec("duplicate_charge", at(2, 11)),
            AnomalySpec("negative_invoice", at(2, 16)),
            AnomalySpec("revenue_drop", at(3), DAY, size=0.5),
        ),
        seed=21,
    ),
    Scenario(
        "small-anomalies",
        "200/day: total outage, 6 h partial outage, card testing at night, a 6x two-day dispute wave, a refund spike",
        TrafficSpec(200, weekend_factor=0.45, currencies=(("usd", 0.8), ("eur", 0.2))),
        (
            AnomalySpec("total_outage", at(0, 14), HOUR, size=5),
            AnomalySpec("partial_outage", at(1, 10), 6 * HOUR, size=0.7),
            AnomalySpec("card_testing", at(2, 2), HOUR, size=120),
            # At 200 a day (~0.45 disputes a day) a 3x wave over two days is 3 extra disputes: 4 in 48 h where 0.9
            # are usual happens by chance once in ~80 such windows, so no careful human (and no sound test) calls
            # it. 6x over two days (7 extra here: 7 in 48 h) is about 1 in 30,000 by chance.
            AnomalySpec("dispute_wave", at(3), 2 * DAY, size=6),
            AnomalySpec("refund_spike", at(5, 12), 6 * HOUR, size=0.3, currency="usd"),
        ),
        seed=22,
    ),
    Scenario(
        "mid-payments",
        "1,500/day: outage, card testing, EUR partial outage, duplicate, negative invoice, webhook lag, lapse; "
        "API upgraded to basil on day 2",
        TrafficSpec(1500, weekend_factor=0.45, currencies=MULTI, legacy_days=30),
        (
            AnomalySpec("total_outage", at(0, 15), HOUR),
            AnomalySpec("silent_lapse", at(0, 8)),
            AnomalySpec("card_testing", at(1, 3), HOUR, size=120),
            AnomalySpec("partial_outage", at(2, 10), 6 * HOUR, size=0.7, currency="eur"),
            AnomalySpec("duplicate_charge", at(3, 11)),
            AnomalySpec("negative_invoice", at(3, 16)),
            AnomalySpec("webhook_lag", at(4, 13), HOUR),
        ),
        seed=23,
    ),
    Scenario(
        "mid-revenue",
        "1,500/day: a 3x dispute wave, a churn spike, a 50 % revenue drop over a day, a refund spike",
        MID,
        (
            AnomalySpec("dispute_wave", at(0), 2 * DAY, size=3),
            AnomalySpec("churn_spike", at(2, 12), 12 * HOUR, size=5),
            AnomalySpec("revenue_drop", at(4), DAY, size=0.5),
            AnomalySpec("refund_spike", at(6, 10), 6 * HOUR, size=0.3, currency="usd"),
        ),
        seed=24,
    ),
    Scenario(
        "mid-testmode",
        "1,500/day live, 200 test charges/day; outage, card testing, duplicate, negative invoice in TEST mode only",
        TrafficSpec(1500, weekend_factor=0.45, currencies=MULTI, test_charges_per_day=200),
        (
            AnomalySpec("total_outage", at(1, 14), HOUR, size=40, livemode=False),
            AnomalySpec("card_testing", at(2, 15), HOUR, size=150, livemode=False),
            AnomalySpec("duplicate_charge", at(3, 11), livemode=False),
            AnomalySpec("negative_invoice", at(4, 11), livemode=False),
        ),
        seed=25,
    ),
    Scenario(
        "subs-renewal-anomalies",
        "60/day, 95 % subscriptions, 80 % renewing on the 3rd: an outage on the renewal day, a churn spike",
        TrafficSpec(60, subscription_share=0.95, anchor_share=0.8, anchor_day=3, guest_share=0.0),
        (
            AnomalySpec("total_outage", at(1, 9), HOUR, size=8),
            AnomalySpec("churn_spike", at(4, 6), 12 * HOUR, size=5),
        ),
        seed=47,
    ),
    Scenario(
        "huge-50k",
        "50,000/day (4 days: short-window detectors only), charge/invoice events only: outage, card testing, duplicate",
        TrafficSpec(
            50000,
            weekend_factor=0.7,
            subscription_share=0.1,
            currencies=MULTI,
            payment_intents=False,
            filler_per_charge=0.0,
        ),
        (
            AnomalySpec("total_outage", at(0, 14), HOUR),
            AnomalySpec("card_testing", at(1, 3), HOUR, size=150),
            AnomalySpec("duplicate_charge", at(2, 11)),
        ),
        warmup_days=1.0,
        eval_days=3.0,
        scrape_interval=60.0,
        seed=26,
    ),
    # -- the test suite's subset (a real backtest each, seconds) -------------------------------------------------
    Scenario(
        "quick-mid-outage",
        "1,500/day over 2 days: a total outage for an hour, a duplicate charge",
        MID,
        (AnomalySpec("total_outage", at(0, 15), HOUR), AnomalySpec("duplicate_charge", at(1, 11))),
        warmup_days=0.5,
        eval_days=1.5,
        scrape_interval=60.0,
        seed=31,
        quick=True,
    ),
    Scenario(
        "quick-mid-clean",
        "1,500/day over 2 days, clean (redeliveries, retries, renewals, refunds, disputes)",
        MID,
        warmup_days=0.5,
        eval_days=1.5,
        scrape_interval=60.0,
        seed=32,
        quick=True,
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}


def select(names: list[str] | None, *, quick: bool = False) -> list[Scenario]:
    """Scenarios by name (in corpus order); all but the quick ones by default, only the quick ones with quick."""
    if names:
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
        return [s for s in SCENARIOS if s.name in names]
    return [s for s in SCENARIOS if s.quick == quick]
