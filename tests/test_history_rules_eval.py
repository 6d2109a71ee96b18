"""The backtest's rule evaluation against a real Prometheus and promtool: series identity across recording levels."""

from __future__ import annotations

import gc
from pathlib import Path

from exporter.history.prom import PrometheusProcess, backfill_openmetrics
from exporter.history.rules_eval import Rule, evaluate
from tests.conftest import require_binary

STEP = 60.0
START = 1_700_000_040.0  # a multiple of STEP
POINTS = 20


def _history(path: Path) -> None:
    """Gauges `x` (0, 1, ..., 19) and `y` (always 100) of one target, sampled every STEP."""
    lines = ["# TYPE x gauge\n"]
    lines += [f'x{{job="j"}} {i} {START + i * STEP:.3f}\n' for i in range(POINTS)]
    lines.append("# TYPE y gauge\n")
    lines += [f'y{{job="j"}} 100 {START + i * STEP:.3f}\n' for i in range(POINTS)]
    path.write_text("".join(lines) + "# EOF\n", encoding="utf-8")


def test_recording_rule_whose_result_changes_metric_name_stays_one_series(tmp_path: Path) -> None:
    """`(x > 9) or y` returns series `y` until x passes 9, then series `x`, with the same labels. Prometheus
    records both as one series named by `record`, and an alert on them as one alert; so must the backtest."""
    require_binary("promtool")
    require_binary("prometheus")
    om = tmp_path / "raw.om"
    _history(om)
    data_dir = tmp_path / "tsdb"
    end = START + (POINTS - 1) * STEP
    backfill_openmetrics(om, data_dir, end - START + STEP)

    def backfill(lines: list[str]) -> None:
        path = tmp_path / "recorded.om"
        path.write_text("".join(lines) + "# EOF\n", encoding="utf-8")
        backfill_openmetrics(path, data_dir, end - START + STEP)

    rules = [
        Rule(group="g", interval=STEP, expr="(x > 9) or y", record="j:picked:value"),
        Rule(group="g", interval=STEP, expr="j:picked:value >= 0", alert="Picked"),
        Rule(group="g", interval=STEP, expr="(x > 9) or y", alert="PickedDirectly"),
    ]
    prom = PrometheusProcess(data_dir, tmp_path, lookback_seconds=STEP - 0.001)
    try:
        prom.start()
        evaluation = evaluate(prom, rules, start=START, end=end, min_step=STEP, backfill=backfill)
        recorded = prom.query_range("j:picked:value", START, end, STEP)
    finally:
        prom.stop()
    assert gc.isenabled()  # evaluate() pauses garbage collection while results pile up, and only then
    (series,) = recorded
    assert series["metric"] == {"__name__": "j:picked:value", "job": "j"}
    values = [(float(t), float(v)) for t, v in series["values"]]
    assert values == [(START + i * STEP, 100.0 if i <= 9 else float(i)) for i in range(POINTS)]
    assert evaluation.recorded_series == 1
    # One uninterrupted alert each, from the first evaluation, still firing at the end.
    spans = sorted((a.alertname, a.labels.get("job"), a.starts_at, a.ends_at) for a in evaluation.alerts)
    assert spans == [("Picked", "j", START, None), ("PickedDirectly", "j", START, None)]
