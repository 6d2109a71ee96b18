"""Missed deliveries: with a Stripe API key, `serve` asks Stripe's Events API what it has not delivered.

Every `poller.interval_seconds` it makes two list calls through the stripe SDK (read-only; a restricted key with
"Events: read" is enough):

1. `delivery_success=false`, created within Stripe's 3-day retry window: events Stripe has not yet delivered to
   every endpoint of the account. Their number is `stripe_events_undelivered`. (Stripe does not say which endpoint
   failed: with several endpoints on the account, another endpoint's failures count too.)
2. Events created since the previous poll (overlapping by `settle_seconds`), restricted to the event types
   BillingWatch reads: any of them older than `settle_seconds` whose id the dedupe store has never seen was missed
   by the webhook path. It is counted in `billingwatch_events_fetched_total` and, with `ingest_fetched`, processed
   like a first delivery (received now). Dedupe makes that exact: if Stripe delivers it later after all, that
   delivery is a duplicate and changes no business metric.

The key comes only from the environment (STRIPE_API_KEY), never from the config file, and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import logs

if TYPE_CHECKING:
    from exporter.ingest import Ingestor
    from exporter.state import StateStore

STATE_NS = "poller"
RETRY_WINDOW_SECONDS = 3 * 86400  # Stripe retries a failed delivery for up to three days
MAX_TYPES = 20  # the Events API's `types` filter takes at most 20


@dataclass(frozen=True)
class PollerConfig:
    interval_seconds: float
    settle_seconds: float
    lookback_seconds: float
    ingest_fetched: bool
    max_events_per_poll: int
    api_base: str
    types: list[str]

    def validate(self) -> list[str]:
        errors = []
        if self.interval_seconds < 10:
            errors.append("poller.interval_seconds: must be at least 10 (Stripe rate-limits the API)")
        if self.settle_seconds < 0:
            errors.append("poller.settle_seconds: must not be negative")
        if self.lookback_seconds < 0 or self.lookback_seconds > 30 * 86400:
            errors.append("poller.lookback_seconds: must be between 0 and 2592000 (Stripe keeps 30 days)")
        if self.max_events_per_poll < 100:
            errors.append("poller.max_events_per_poll: must be at least 100")
        if len(self.types) > MAX_TYPES:
            errors.append(f"poller.types: at most {MAX_TYPES} types (an Events API limit)")
        return errors


class MissedDeliveryPoller:
    def __init__(
        self,
        config: PollerConfig,
        api_key: str,
        registry: CollectorRegistry,
        state: StateStore,
        ingestor: Ingestor,
        *,
        clock: Callable[[], float] = time.time,
    ):
        import stripe

        self.config = config
        self.state = state
        self.ingestor = ingestor
        self.clock = clock
        kwargs: dict[str, Any] = {"max_network_retries": 2}
        if config.api_base:
            kwargs["base_addresses"] = {"api": config.api_base}
        self.client = stripe.StripeClient(api_key, **kwargs)
        self.undelivered = Gauge(
            "stripe_events_undelivered",
            "Events Stripe reports as not yet delivered to every webhook endpoint (delivery_success=false), created "
            "within its 3-day retry window, at the last poll.",
            registry=registry,
        )
        self.fetched = Counter(
            "billingwatch_events_fetched",
            "Events the exporter fetched from the Events API because no webhook delivered them.",
            registry=registry,
        )
        self.polls = Counter(
            "billingwatch_poller_polls", "Polls of the Stripe Events API, by outcome.", ["outcome"], registry=registry
        )
        for outcome in ("ok", "error"):
            self.polls.labels(outcome)
        self.last_success = Gauge(
            "billingwatch_poller_last_success_timestamp_seconds",
            "When the Stripe Events API was last polled successfully.",
            registry=registry,
        )

    # -- one poll ---------------------------------------------------------------------------------------------

    def _list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Blocking SDK call (run in a thread): up to max_events_per_poll events, newest first."""
        out = []
        for event in self.client.v1.events.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
            out.append(event.to_dict())
            if len(out) >= self.config.max_events_per_poll:
                break
        return out

    def _types_filter(self) -> dict[str, Any]:
        types = self.config.types
        if len(types) == 1:
            return {"type": types[0]}
        return {"types": list(types)} if types else {}

    async def poll_once(self) -> None:
        now = self.clock()
        cfg = self.config
        undelivered = await asyncio.to_thread(
            self._list,
            {"limit": 100, "delivery_success": False, "created": {"gte": int(now - RETRY_WINDOW_SECONDS)},
             **self._types_filter()},
        )  # fmt: skip
        self.undelivered.set(len(undelivered))
        cursor = self.state.get(STATE_NS, "cursor")
        if not isinstance(cursor, int | float):
            cursor = now - cfg.lookback_seconds
        since = int(cursor - cfg.settle_seconds)
        recent = await asyncio.to_thread(self._list, {"limit": 100, "created": {"gte": since}, **self._types_filter()})
        settled_before = now - cfg.settle_seconds
        missed = 0
        # Oldest first, as Stripe would have delivered them.
        for event in sorted(recent, key=lambda e: e.get("created") or 0):
            created = event.get("created")
            if not isinstance(created, int | float) or created > settled_before:
                continue  # Stripe may still be delivering it
            if not self._missed(event):
                continue
            missed += 1
            self.fetched.inc()
        self.state.put(STATE_NS, "cursor", int(settled_before))
        self.polls.labels("ok").inc()
        self.last_success.set(now)
        if missed or undelivered:
            logs.event(
                logging.WARNING,
                "Stripe events not delivered by webhook",
                fetched=missed,
                undelivered=len(undelivered),
                ingested=cfg.ingest_fetched,
            )

    def _missed(self, event: dict[str, Any]) -> bool:
        """Count (and, if configured, process) an event no webhook delivered; False if it was delivered."""
        from exporter.ingest import event_shape_error

        event_id = event.get("id")
        if not isinstance(event_id, str) or event_shape_error(event) is not None:
            return False
        now = self.clock()
        if not self.config.ingest_fetched:
            return not self.state.seen(event_id)
        # A first delivery by another path: the same processing as a webhook's, without counting a webhook request
        # or a webhook delivery delay.
        return self.ingestor.ingest(event, now, via_webhook=False) != "duplicate"

    # -- the loop ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        import stripe

        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except stripe.StripeError as exc:
                self.polls.labels("error").inc()
                # The SDK's message never contains the key; the HTTP status and error type say what is wrong.
                logs.event(
                    logging.ERROR,
                    "Stripe Events API poll failed",
                    status=getattr(exc, "http_status", None),
                    error=type(exc).__name__,
                )
            except Exception:
                self.polls.labels("error").inc()
                logs.error("Stripe Events API poll failed")
            await asyncio.sleep(self.config.interval_seconds)


def build_poller(
    config: Any,
    registry: CollectorRegistry,
    state: StateStore,
    ingestor: Ingestor,
    *,
    env: Mapping[str, str],
    clock: Callable[[], float] = time.time,
) -> MissedDeliveryPoller | None:
    """The poller when STRIPE_API_KEY is set, else None."""
    api_key = (env.get("STRIPE_API_KEY") or "").strip()
    poller_config = getattr(config, "poller", None)
    if not api_key or poller_config is None:
        return None
    return MissedDeliveryPoller(poller_config, api_key, registry, state, ingestor, clock=clock)
