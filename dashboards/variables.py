"""The template variables both dashboards share: data source, job, instance, Stripe mode and currency."""

from __future__ import annotations

from typing import Any

from dashboards import model as m

# The data source provisioned by dashboards/provisioning/datasources/: the variable's default selection.
DATASOURCE_UID = "billingwatch-prometheus"
DATASOURCE_NAME = "Prometheus"


def variables(*, currency: bool = True) -> list[dict[str, Any]]:
    out = [
        m.datasource_variable(DATASOURCE_UID, DATASOURCE_NAME),
        # billingwatch_build_info is exposed by every exporter from its first scrape, traffic or not.
        m.query_variable("job", "Job", "label_values(billingwatch_build_info, job)"),
        m.query_variable("instance", "Instance", 'label_values(billingwatch_build_info{job=~"$job"}, instance)'),
        # Live and test traffic are never added together (stripe_mrr, revenue...): live by default, test on request.
        m.custom_variable("livemode", "Mode", [("live", "true"), ("test", "false")]),
    ]
    if currency:
        out.append(
            m.query_variable(
                "currency",
                "Currency",
                'label_values(stripe_charges_total{job=~"$job", instance=~"$instance"}, currency)',
            )
        )
    return out
