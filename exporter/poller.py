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

Event types: Stripe's `types` filter takes at most 20 exact names and no wildcard; `type` takes one name or one
wildcard (`charge.*`). `poller.types` may hold any number of exact names and wildcards: exact names are listed
20 at a time, each wildcard in its own call ("groups"; two list calls per group and poll).

Nothing found is dropped. Stripe lists newest first; a poll reads at most `max_events_per_poll` events. When a
window holds more, the poll processes what it read and remembers, per group, the oldest event it read (the
`backlog` in the state file); the next polls continue below it with `starting_after`, within the same window,
until every group has been read to the window's start. Only then does the cursor move to the window's end.

The key comes only from the environment (STRIPE_API_KEY), never from the config file, and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import stripe
from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter import logs
from exporter.config import Config
from exporter.ingest import Ingestor, event_shape_error
from exporter.poller_config import PollerConfig, type_groups
from exporter.state import StateStore

STATE_NS = "poller"
RETRY_WINDOW_SECONDS = 3 * 86400  # Stripe retries a failed delivery for up to three days


def _group_key(group: dict[str, Any]) -> str:
    return group.get("type") or ",".join(group.get("types") or ()) or "*"


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

    def _list(self, params: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Blocking SDK call (run in a thread): up to `limit` events, newest first, paging with starting_after;
        and whether the list was read to its end."""
        out: list[dict[str, Any]] = []
        params = {**params, "limit": min(100, max(1, limit))}
        while True:
            page = self.client.v1.events.list(params=params)  # type: ignore[arg-type]
            data = [event.to_dict() for event in page.data]
            out.extend(data)
            if not page.has_more or not data:
                return out, True
            if len(out) >= limit:
                return out, False
            params = {**params, "starting_after": data[-1]["id"], "limit": min(100, limit - len(out))}

    async def _list_group(self, params: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], bool]:
        try:
            return await asyncio.to_thread(self._list, params, limit)
        except stripe.InvalidRequestError:
            if "starting_after" not in params:
                raise
            # The event we stopped at is gone (older than Stripe's 30 days): read the window again from its end;
            # dedupe makes re-reading exact, it only costs calls.
            params = {k: v for k, v in params.items() if k != "starting_after"}
            return await asyncio.to_thread(self._list, params, limit)

    async def poll_once(self) -> None:
        now = self.clock()
        cfg = self.config
        groups = type_groups(cfg.types)
        undelivered: dict[str, None] = {}
        for group in groups:
            found, _ = await asyncio.to_thread(
                self._list,
                {"delivery_success": False, "created": {"gte": int(now - RETRY_WINDOW_SECONDS)}, **group},
                cfg.max_events_per_poll,
            )
            undelivered.update((e["id"], None) for e in found if isinstance(e.get("id"), str))
        self.undelivered.set(len(undelivered))
        cursor = self.state.get(STATE_NS, "cursor")
        if not isinstance(cursor, int | float):
            cursor = now - cfg.lookback_seconds
        since = int(cursor - cfg.settle_seconds)
        # A window still being read (an earlier poll found more than max_events_per_poll) keeps its end.
        backlog = self.state.get(STATE_NS, "backlog")
        if not isinstance(backlog, dict) or not isinstance(backlog.get("until"), int):
            backlog = {"until": int(now - cfg.settle_seconds), "after": {}}
        until: int = backlog["until"]
        after: dict[str, Any] = backlog["after"] if isinstance(backlog.get("after"), dict) else {}
        budget = cfg.max_events_per_poll
        recent: dict[str, dict[str, Any]] = {}
        complete = True
        for group in groups:
            key = _group_key(group)
            if after.get(key) is True:
                continue  # this group's part of the window is read; others still are not
            params: dict[str, Any] = {"created": {"gte": since, "lte": until}, **group}
            if isinstance(after.get(key), str):
                params["starting_after"] = after[key]
            found, done = await self._list_group(params, budget) if budget > 0 else ([], False)
            budget -= len(found)
            for event in found:
                if isinstance(event.get("id"), str):
                    recent[event["id"]] = event
            if done:
                after[key] = True
            else:
                complete = False
                if found:
                    after[key] = found[-1]["id"]  # the oldest read: the next poll continues below it
        missed = 0
        # Oldest first, as Stripe would have delivered them.
        for event in sorted(recent.values(), key=lambda e: e.get("created") or 0):
            created = event.get("created")
            if not isinstance(created, int | float) or created > until:
                continue  # Stripe may still be delivering it
            if not self._missed(event):
                continue
            missed += 1
            self.fetched.inc()
        if complete:
            self.state.put(STATE_NS, "cursor", until)
            self.state.delete(STATE_NS, "backlog")
        else:
            self.state.put(STATE_NS, "backlog", {"until": until, "after": after})
            logs.event(
                logging.WARNING,
                "more events than poller.max_events_per_poll: the rest is read by the next polls",
                read=len(recent),
                max_events_per_poll=cfg.max_events_per_poll,
            )
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
    config: Config,
    registry: CollectorRegistry,
    state: StateStore,
    ingestor: Ingestor,
    *,
    env: Mapping[str, str],
    clock: Callable[[], float] = time.time,
) -> MissedDeliveryPoller | None:
    """The poller when STRIPE_API_KEY is set, else None."""
    api_key = (env.get("STRIPE_API_KEY") or "").strip()
    if not api_key:
        return None
    return MissedDeliveryPoller(config.poller, api_key, registry, state, ingestor, clock=clock)
