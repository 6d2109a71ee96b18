"""The private landing page shows the exporter's state; the private API shows times as ISO 8601 beside epoch."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from exporter import samples
from tests.ingest_support import make_config, running_exporter


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_landing_page_before_any_event_says_so_and_links_the_alerting_stack(tmp_path):
    config = make_config(tmp_path / "s.sqlite3", server={"prometheus_url": "http://prom.example:9090",
                                                          "alertmanager_url": ""})  # fmt: skip
    async with running_exporter(config) as ex:
        async with ex.session.get(f"{ex.private}/") as resp:
            assert resp.status == 200
            page = await resp.text()
    assert "Last event received</th><td>none yet" in page
    assert "Anomalies today (UTC)</th><td>0<" in page
    assert "off (set STRIPE_API_KEY" in page
    assert '<a href="http://prom.example:9090">Prometheus</a>' in page
    assert "Alertmanager</a>" not in page  # an empty URL hides the link


async def test_landing_page_shows_the_last_event_its_age_counts_and_todays_anomalies(tmp_path):
    now = int(time.time())
    async with running_exporter(make_config(tmp_path / "s.sqlite3")) as ex:
        for i in range(2):  # the same customer charged the same amount twice, 30 s apart: a duplicate charge
            charge = samples.charge(amount=4900, customer="cus_landing", created=now - 60 + 30 * i,
                                    charge_id=f"ch_landing_{i}")  # fmt: skip
            event = samples.event("charge.succeeded", charge, created=now - 60 + 30 * i, event_id=f"evt_landing_{i}")
            assert await ex.post_event(event) == 200
        assert await ex.post_event(event) == 200  # a redelivery
        async with ex.session.get(f"{ex.private}/") as resp:
            page = await resp.text()
        async with ex.session.get(f"{ex.private}/api/v1/events/recent?limit=1") as resp:
            recent = (await resp.json())["events"][0]
        async with ex.session.get(f"{ex.private}/api/v1/anomalies") as resp:
            anomaly = (await resp.json())["anomalies"][0]
    match = re.search(r"Last event received</th><td>(\S+) \((\d+) s ago\)", page)
    assert match, page
    assert abs(datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() - now) < 30
    assert "2 accepted, 1 redeliveries, 0 rejected" in page
    assert "Anomalies today (UTC)</th><td>1<" in page
    assert "duplicate_charge" in page and "cus_landing" in page
    assert recent["received_iso"] == _iso(recent["received"]) and recent["created_iso"] == _iso(recent["created"])
    assert anomaly["detected_at_iso"] == _iso(anomaly["detected_at"])
    assert anomaly["expires_at_iso"] == _iso(anomaly["expires_at"])
